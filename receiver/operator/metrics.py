"""Prometheus metrics at /metrics: counters kept by each process, gauges read from the database.

Under gunicorn several processes serve requests; with PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py
sets it) every process writes its counters there and a scrape adds them up. Queue gauges come from
the database at scrape time, so they are right however many web and worker processes run.
"""
from __future__ import annotations

import os

from flask import Blueprint, Flask, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from receiver.operator import throttle
from receiver.operator.traffic import Traffic
from receiver.sending.delivery import silent_deadlines
from receiver.storage import get_storage
from receiver.storage.stats import ALIVE_SECONDS, STALL_SECONDS
from receiver.webhooks.guard import bearer_matches

CALLBACKS = Counter(
    "vonage_callbacks_total",
    "Callbacks received, by kind and outcome (stored, duplicate, rejected, unavailable, bad_request, probe)",
    ["kind", "outcome"],
)
ACK_SECONDS = Histogram(
    "vonage_ack_seconds",
    "Time from reading a callback to acknowledging it",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REJECTIONS = Counter("vonage_signature_rejections_total", "Requests refused by signature verification", ["reason"])
PROCESSED = Counter(
    "vonage_events_processed_total",
    "Worker outcomes per stored event (done, failed = retry scheduled, dead, invalid, waiting = SMS part stored)",
    ["kind", "outcome"],
)
WORKER_RESTARTS = Counter("vonage_worker_restarts_total", "Worker loops that failed and were started again")
LAG_SECONDS = Histogram(
    "vonage_processing_lag_seconds",
    "Time from storing a callback to its handler finishing",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)

bp = Blueprint("metrics", __name__)


class QueueCollector:
    """Backlog and health gauges, read from the database at scrape time."""

    def __init__(self, storage, config=None):
        self.storage = storage
        self.deadlines = silent_deadlines(config) if config is not None else {}

    def collect(self):
        by_state = GaugeMetricFamily("vonage_events", "Stored callbacks by state", labels=["state"])
        oldest = GaugeMetricFamily("vonage_oldest_pending_age_seconds",
                                   "How long the oldest callback that is due has waited to be processed")
        alive = GaugeMetricFamily("vonage_workers_alive", f"Worker loops seen in the last {ALIVE_SECONDS:g} seconds")
        stuck = GaugeMetricFamily("vonage_events_stuck", "Events claimed by a worker that is dead or whose lease ran out")
        stalled = GaugeMetricFamily("vonage_backlog_stalled",
                                    f"1 when events have been due for {STALL_SECONDS:g} s and no worker finished one")
        try:
            stats = self.storage.stats.shared()
        except Exception:  # a scrape must not fail because the database is down; readyz reports that
            return
        for state, count in stats.by_state.items():
            by_state.add_metric([state], count)
        oldest.add_metric([], stats.oldest_due_seconds)
        alive.add_metric([], stats.live_workers)
        stuck.add_metric([], stats.stuck)
        stalled.add_metric([], int(stats.stalled))
        yield from (by_state, oldest, alive, stuck, stalled)
        silent = GaugeMetricFamily("vonage_outbox_silent", "Sent messages with no final status past their channel's "
                                   "deadline (SILENT_AFTER_SECONDS_*)")
        try:
            silent.add_metric([], self.storage.outbox.silent(self.deadlines, limit=0)[0])
        except Exception:
            return
        yield silent


# The labelled children, looked up once each: .labels() costs more than the increment it leads to.
_callbacks: dict = {}
_acks: dict = {}


def observe_callback(kind: str, outcome: str, seconds: float, *, api_key=None, application_id=None) -> None:
    """Count one answered callback: Prometheus counters, and the per-minute traffic the console shows."""
    counter = _callbacks.get((kind, outcome)) or _callbacks.setdefault((kind, outcome), CALLBACKS.labels(kind, outcome))
    counter.inc()
    (_acks.get(kind) or _acks.setdefault(kind, ACK_SECONDS.labels(kind))).observe(seconds)
    current_app.extensions["traffic"].count(outcome, seconds, api_key, application_id)


@bp.get("/metrics")
def scrape():
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        wait = throttle.wait_for("metrics")
        if wait is not None:
            return Response(throttle.message(wait) + "\n", 429, {"Retry-After": str(wait)}, content_type="text/plain")
        authorization = request.headers.get("Authorization")
        if not bearer_matches(authorization, token):
            if authorization:
                throttle.wrong_token("metrics")
            abort(401)
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    output = generate_latest(registry) + generate_latest(_queue_registry(current_app))
    return Response(output, content_type=CONTENT_TYPE_LATEST)


def _queue_registry(app: Flask) -> CollectorRegistry:
    registry = app.extensions.get("queue_registry")
    if registry is None:
        registry = CollectorRegistry()
        registry.register(QueueCollector(get_storage(app), app.config))
        app.extensions["queue_registry"] = registry
    return registry


def init_app(app: Flask) -> None:
    app.extensions["traffic"] = Traffic(get_storage(app))
    if app.config["METRICS_ENABLED"]:
        app.register_blueprint(bp)
