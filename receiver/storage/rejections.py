"""The bounded log of requests refused by signature verification: counted in memory, written once a second.

A forged request costs a dict update on the request path. Each second's rejections are written as one
row per (second, reason, address, path) with their count, in one transaction on the bookkeeping
engine, by a thread of each process: a flood of forgeries costs the database a few rows a second,
never a durable write a request. A crash loses at most the last second of this log (never a callback).
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from receiver.platform import background
from receiver.platform.formats import iso
from receiver.storage.engines import write_transaction
from receiver.storage.schema import rejections

log = logging.getLogger("receiver.storage")

FLUSH_SECONDS = 1.0
MAX_KEYS = 200  # distinct (second, reason, address, path) held between flushes; past it, addresses merge
OTHERS = "(others)"  # the address of rejections merged past MAX_KEYS


class RejectionLog:
    """This process's rejections since the last flush, and the thread that writes them."""

    def __init__(self, engine: Engine, keep: int):
        self.engine, self.keep = engine, keep
        self._lock = threading.Lock()
        self._pending: dict[tuple, list] = {}  # (second, path, address, reason) -> [count, detail, at]
        self._pid: int | None = None
        self._stopped = threading.Event()

    def note(self, *, path: str, remote_addr: str | None, reason: str, detail: str) -> None:
        """Count one rejection (no I/O)."""
        now = time.time()
        key = (int(now), path[:255], remote_addr, reason[:64])
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            found = self._pending.get(key)
            if found is None and len(self._pending) >= MAX_KEYS:
                key = (key[0], key[1], OTHERS, key[3])
                found = self._pending.get(key)
            if found is None:
                self._pending[key] = [1, detail[:500], now]
            else:
                found[0] += 1

    def flush(self) -> None:
        """Write what was counted since the last flush in one transaction; trim to the newest `keep`."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        rows = [{"at": at, "path": path, "remote_addr": address, "reason": reason, "detail": detail, "count": count}
                for (_, path, address, reason), (count, detail, at) in pending.items()]
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(insert(rejections), rows)
                newest = conn.execute(select(func.max(rejections.c.id))).scalar_one()
                conn.execute(delete(rejections).where(rejections.c.id <= newest - self.keep))
        except SQLAlchemyError as exc:  # the database is down: these rejections are only counted in metrics
            log.warning("could not write %d rejection rows: %s", len(rows), exc.__class__.__name__)

    def _start(self) -> None:
        # One thread per process, started in the process that serves requests (after gunicorn's fork).
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._pending = {}
        background.start("receiver-rejections", self._flush_and_wait, self._stopped, log)
        atexit.register(self.flush)

    def _flush_and_wait(self) -> float:
        self.flush()
        return FLUSH_SECONDS

    def stop(self) -> None:
        """End this process's flushing (an app that is discarded: tests); what is pending is written now."""
        self._stopped.set()
        self.flush()


def recent(engine: Engine, limit: int = 100) -> list[dict]:
    """Newest first; each row with how many requests it counts."""
    with engine.connect() as conn:
        rows = conn.execute(select(rejections).order_by(rejections.c.id.desc()).limit(limit)).all()
    return [
        {"at": iso(r.at), "path": r.path, "remote_addr": r.remote_addr, "reason": r.reason, "detail": r.detail,
         "count": r.count}
        for r in rows
    ]


def by_reason(engine: Engine, since: float) -> dict[str, int]:
    """How many requests were refused for each reason since `since` (epoch seconds)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(rejections.c.reason, func.sum(rejections.c.count)).where(rejections.c.at >= since)
            .group_by(rejections.c.reason)
        ).all()
    return {reason: int(total) for reason, total in rows}
