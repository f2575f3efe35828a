"""Counting answered callbacks per minute, by sender and outcome, for the console's queue health.

The request path only adds to a dict in memory; a thread of each web process writes its counts to
the `traffic` table every FLUSH_SECONDS (a crash loses at most that much of these counts, never a
callback). Prometheus' /metrics has the same counts as counters; this is the windowed history.
"""
from __future__ import annotations

import atexit
import bisect
import logging
import os
import socket
import threading
import time

from receiver.platform import background

log = logging.getLogger("receiver.operator")

FLUSH_SECONDS = 10.0
KEEP_DAYS = 8  # rows older than this are pruned by the worker's housekeeping
BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)  # upper bounds; one more above


class Traffic:
    """This process's counts, keyed by (minute, api_key, application_id, outcome)."""

    def __init__(self, storage):
        self.storage = storage
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._rows: dict[tuple, dict] = {}
        self._dirty: set[tuple] = set()
        self._pid: int | None = None
        self._stopped = threading.Event()

    def count(self, outcome: str, seconds: float, api_key: str | None, application_id: str | None) -> None:
        """Add one answered callback (called on the request path: a dict update, no I/O)."""
        now = time.time()
        key = (int(now // 60), api_key or "", application_id or "", outcome)
        bucket = bisect.bisect_left(BUCKETS_MS, seconds * 1000)
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = {"count": 0, "last_at": now, "latency": [0] * (len(BUCKETS_MS) + 1)}
            row["count"] += 1
            row["last_at"] = now
            row["latency"][bucket] += 1
            self._dirty.add(key)

    def flush(self) -> None:
        """Write the minutes counted since the last flush; forget minutes that can no longer change."""
        if self._stopped.is_set():
            return
        with self._lock:
            keys, self._dirty = self._dirty, set()
            rows = [{"minute": k[0], "api_key": k[1], "application_id": k[2], "outcome": k[3],
                     "count": self._rows[k]["count"], "last_at": self._rows[k]["last_at"],
                     "latency": list(self._rows[k]["latency"])} for k in keys]
            current = int(time.time() // 60)
            for key in [k for k in self._rows if k[0] < current - 1 and k not in keys]:
                del self._rows[key]
        try:
            self.storage.stats.save_traffic(self.process, rows)
        except Exception as exc:  # the database is down: count these minutes again at the next flush
            with self._lock:
                self._dirty.update(k for k in keys if k in self._rows)
            log.warning("could not write the traffic counts: %s", exc.__class__.__name__)

    def _start(self) -> None:
        # One thread per process, started in the process that serves requests (after gunicorn's fork).
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.process = f"{socket.gethostname()}:{os.getpid()}"
            self._rows, self._dirty = {}, set()
        background.start("receiver-traffic", self._flush_and_wait, self._stopped, log)
        atexit.register(self.flush)

    def _flush_and_wait(self) -> float:
        self.flush()
        return FLUSH_SECONDS

    def stop(self) -> None:
        """End this process's flushing, the one at exit included (an app that is discarded: tests)."""
        self._stopped.set()


def summary(rows: list[dict]) -> dict:
    """Add up traffic rows: answers by outcome, and the acknowledgement latency p50/p99 (ms, at bucket bounds)."""
    by_outcome: dict[str, int] = {}
    latency = [0] * (len(BUCKETS_MS) + 1)
    for row in rows:
        by_outcome[row["outcome"]] = by_outcome.get(row["outcome"], 0) + row["count"]
        if row["outcome"] in ("stored", "duplicate"):
            latency = [a + b for a, b in zip(latency, row["latency"])]
    return {"by_outcome": by_outcome, "p50_ms": _quantile(latency, 0.5), "p99_ms": _quantile(latency, 0.99)}


def _quantile(counts: list[int], q: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for bound, count in zip((*BUCKETS_MS, float("inf")), counts):
        seen += count
        if seen >= q * total:
            return bound
    return float("inf")
