"""The worker path: claim stored callbacks in batches, parse, reconcile message state, dispatch
each in the order received, mark done.

Runs as a background thread of the web process (the default) or as its own process
(`flask worker`). It never answers HTTP, and in a web process it hands the GIL to request
threads between events so that it does not hold up acknowledgements.
"""
from __future__ import annotations

import atexit
import json
import logging
import random
import os
import signal
import socket
import threading
import time
import traceback

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

import handlers
from receiver import metrics
from receiver.payloads import MESSAGES_KINDS, DuplicateParameter, json_object, sms_params
from receiver.storage import Outcome, Storage, get_storage
from receiver.storage.stats import HEARTBEAT_SECONDS
from schemas import Event, InvalidPayload, load_event

log = logging.getLogger("receiver.worker")

PRUNE_EVERY_SECONDS = 3600.0
MAX_BATCH = 100  # events claimed at once
BATCH_SECONDS = 0.5  # a batch is sized to take about this long
GATHER_SECONDS = 0.05  # after a short batch, how long to let the next one gather
SETTLE_EVERY = 10  # outcomes written together (what a killed worker may have dispatched but not marked)


def handler_for(event: Event):
    """The function the dispatch tables name for this event (a default when none does)."""
    if event.kind == "status":
        return handlers.STATUS_HANDLERS.get(event.status, handlers.DEFAULT_STATUS_HANDLER)
    table = handlers.INBOUND_HANDLERS
    return (
        table.get(f"{event.channel}:{event.message_type}")
        or table.get(event.message_type)
        or handlers.DEFAULT_INBOUND_HANDLER
    )


def parse_stored(row) -> Event:
    """The stored callback as an Event.

    :raises InvalidPayload: when it does not fit its schema.
    """
    if row.kind in MESSAGES_KINDS:
        payload = json_object(row.body)
        if payload is None:
            raise InvalidPayload({"_body": ["body is not a JSON object"]})
    else:
        try:
            payload = sms_params(row.query, row.body, row.content_type)
        except DuplicateParameter as exc:
            raise InvalidPayload({str(exc): ["parameter appears more than once"]}) from None
    event = load_event(row.kind, payload)
    event.event_id = row.id
    return event


class Worker:
    """One worker loop. `stop()` lets the current event finish, then `run()` returns."""

    def __init__(self, storage: Storage, config: dict, name: str | None = None, *, beside_requests: bool = False):
        self.storage = storage
        self.config = config
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._last_beat = 0.0
        self._last_sweep = 0.0
        self._last_prune = 0.0
        self._batch_size = MAX_BATCH
        self.beside_requests = beside_requests  # a thread of a web process, sharing its GIL
        self.processed = 0

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def notify(self) -> None:
        """A new callback was stored: look for work now instead of at the next poll."""
        self._wake.set()

    # -- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        log.info("worker %s started", self.name)
        while not self._stop.is_set():
            try:
                worked = self.run_once()
                self._housekeeping()
            except SQLAlchemyError as exc:
                # Database unreachable: whatever we claimed stays leased and is claimed again later.
                log.warning("worker %s: database error, retrying: %s", self.name, exc.__class__.__name__)
                worked = False
                self._stop.wait(min(5.0, self.config["WORKER_POLL_SECONDS"] * 4))
            if not worked:
                self._wake.wait(self.config["WORKER_POLL_SECONDS"])
                self._wake.clear()
            elif worked < self._batch_size:
                # Callbacks are trickling in: let a few gather rather than claim each one alone.
                # Fewer, larger batches mean fewer write transactions beside the request path's
                # (SQLite has one writer at a time), for at most GATHER_SECONDS more lag.
                self._stop.wait(GATHER_SECONDS)
        log.info("worker %s stopped after %d events", self.name, self.processed)

    def run_until_idle(self, max_events: int = 10_000) -> int:
        """Process every event that is due now; return how many were processed (tests, CLI)."""
        count = 0
        while count < max_events and not self.stopping:
            done = self.run_once(limit=max_events - count)
            if not done:
                break
            count += done
        return count

    def run_once(self, limit: int | None = None) -> int:
        """Claim a batch of due events and process it; how many were processed (0: none was due)."""
        size = self._batch_size if limit is None else min(self._batch_size, limit)
        rows = self.storage.claim(self.name, self.config["LEASE_SECONDS"], size)
        if not rows:
            return 0
        started = time.monotonic()
        done = self.process_batch(rows)
        self.processed += done
        # Size the next batch to take about BATCH_SECONDS: large while handlers are quick, one
        # event at a time when a handler is slow (its claims would otherwise wait on it).
        per_event = (time.monotonic() - started) / max(1, done)
        self._batch_size = max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(per_event, 1e-6))))
        return done

    # -- a batch of events ---------------------------------------------------------------------
    def process_batch(self, rows: list) -> int:
        """Parse, reconcile, dispatch and settle claimed events, oldest first; how many were processed.

        Message state is written a few events per transaction and outcomes SETTLE_EVERY at a
        time, so the worker's cost per event is its handler and little else. Events left when
        the worker is told to stop (or the batch runs long) are given back.
        """
        outcomes: list[Outcome] = []
        parsed = []
        for row in rows:
            self._let_requests_run()
            try:
                parsed.append((row, parse_stored(row)))
            except InvalidPayload as exc:
                log.warning("event %s (%s) is invalid: %s", row.id, row.kind, exc.errors)
                outcomes.append(Outcome(row.id, "invalid", error=json.dumps(exc.errors)))
                metrics.PROCESSED.labels(row.kind, "invalid").inc()
        try:
            applied = self.storage.apply(parsed, self.config["CONCAT_TIMEOUT_SECONDS"])
        except SQLAlchemyError:
            self._give_back([row.id for row in rows])
            raise  # our database is the problem: the loop waits and claims again
        ready = []
        for item in applied:
            if item.error is not None:
                outcomes.append(self._failure(item.row, item.error))
            elif item.event is None:
                outcomes.append(Outcome(item.row.id, "done", note=item.note, message_id=item.row.message_id))
                metrics.PROCESSED.labels(item.row.kind, "waiting").inc()
            else:
                ready.append((item.row, item.event))

        started = last_settle = time.monotonic()
        processed = len(rows) - len(ready)
        for i, (row, event) in enumerate(ready):
            now = time.monotonic()
            if i and (self.stopping or now - started > self.config["LEASE_SECONDS"] / 4):
                self._give_back([r.id for r, _ in ready[i:]])
                break
            if len(outcomes) >= SETTLE_EVERY or (outcomes and now - last_settle >= BATCH_SECONDS):
                # Done marks go out in small groups, not at the end of the batch: a worker killed
                # mid-batch leaves at most SETTLE_EVERY dispatched events to be dispatched again.
                self.storage.finish(self.name, outcomes)
                outcomes, last_settle = [], now
            self._let_requests_run()
            try:
                handler_for(event)(event)
            except Exception:  # whatever the handler raised, its own database errors included
                outcomes.append(self._failure(row, traceback.format_exc(limit=20)))
            else:
                outcomes.append(Outcome(row.id, "done", message_id=event.message_id, status=event.status))
                metrics.PROCESSED.labels(row.kind, "done").inc()
                metrics.LAG_SECONDS.observe(max(0.0, time.time() - row.received_at))
            processed += 1
        self.storage.finish(self.name, outcomes)
        return processed

    def _let_requests_run(self) -> None:
        # In a web process, hand the GIL to any request thread waiting for it between two
        # events. Left alone, the interpreter lets a busy worker thread run 5 ms before a
        # waiting thread gets a turn, and acknowledgements would wait on the worker.
        if self.beside_requests:
            time.sleep(0)

    def _give_back(self, event_ids: list[int]) -> None:
        try:
            self.storage.release(self.name, event_ids)
        except SQLAlchemyError:
            pass  # the database is down: the claims' leases run out and they are claimed again

    def _failure(self, row, error: str) -> Outcome:
        """Keep the traceback; retry later, or after MAX_ATTEMPTS keep the event as dead."""
        if row.attempts >= self.config["MAX_ATTEMPTS"]:
            outcome = Outcome(row.id, "dead", error=error)
        else:
            delay = retry_delay(row.attempts, self.config["RETRY_BASE_SECONDS"], self.config["RETRY_MAX_SECONDS"])
            outcome = Outcome(row.id, "failed", error=error, retry_at=time.time() + delay)
        log.warning("event %s failed (attempt %d): now %s", row.id, row.attempts, outcome.state)
        metrics.PROCESSED.labels(row.kind, outcome.state).inc()
        return outcome

    def _housekeeping(self) -> None:
        now = time.time()
        if now - self._last_sweep >= min(30.0, self.config["CONCAT_TIMEOUT_SECONDS"] / 4):
            self._last_sweep = now
            if self.storage.requeue_expired_parts(self.config["CONCAT_TIMEOUT_SECONDS"], now):
                self._wake.set()
        retention_days = self.config["RETENTION_DAYS"]
        if retention_days > 0 and now - self._last_prune >= PRUNE_EVERY_SECONDS:
            self._last_prune = now
            deleted = self.storage.prune(retention_days * 86400, now)
            log.info("pruned %d events older than %g days", deleted["events"], retention_days)
        if now - self._last_beat >= HEARTBEAT_SECONDS:
            self._last_beat = now
            self.storage.heartbeat(self.name, self.processed, now)


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: base, 2*base, 4*base ... capped."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    return delay * random.uniform(0.8, 1.0)


# -- running it ------------------------------------------------------------------------------------
_thread_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """Run the worker as a thread of the web process unless WORKER_IN_WEB is off.

    The thread starts with the first request (gunicorn's config starts it at boot), in the
    process that serves requests: never at import, and never in a CLI command's process.
    """
    app.extensions["worker"] = None
    if app.config["WORKER_IN_WEB"]:
        app.before_request(lambda: ensure_background_worker(app) and None)


def ensure_background_worker(app: Flask) -> Worker:
    """Start this process's worker thread if it is not running (idempotent, fork-aware)."""
    current = app.extensions.get("worker")
    if current is not None and current.pid == os.getpid():
        return current
    with _thread_lock:
        current = app.extensions.get("worker")
        if current is not None and current.pid == os.getpid():
            return current
        worker = Worker(get_storage(app), app.config, beside_requests=True)
        worker.pid = os.getpid()
        thread = threading.Thread(target=worker.run, name="receiver-worker", daemon=True)
        worker.thread = thread
        app.extensions["worker"] = worker
        thread.start()
        atexit.register(_finish, worker)
        return worker


def notify(app: Flask) -> None:
    """Wake this process's worker thread, if it has one."""
    worker = app.extensions.get("worker")
    if worker is not None:
        worker.notify()


def _finish(worker: Worker) -> None:
    # At interpreter exit: let the current event finish (bounded, under gunicorn's graceful timeout).
    worker.stop()
    worker.thread.join(timeout=25)


def run_forever(app: Flask) -> Worker:
    """`flask worker`: loop in this process until SIGTERM/SIGINT.

    The first signal finishes the current event and exits; a second one stops at once.
    """
    worker = Worker(get_storage(app), app.config)

    def on_signal(signum, _frame):
        if worker.stopping:
            raise SystemExit(128 + signum)
        log.info("worker %s: signal %d, finishing the current event", worker.name, signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()
    return worker
