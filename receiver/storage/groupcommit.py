"""Group commit for the request path: the callbacks of concurrent requests share one transaction.

A durable commit waits for the disk (SQLite: fsync of the WAL; PostgreSQL: WAL flush). One
committer thread per process takes every callback queued while the previous commit was flushing,
writes them in one transaction and flushes once; each request still gets its answer only after
its own callback is on disk. No timer: under light load a batch is one callback and adds no wait.
"""
from __future__ import annotations

import logging
import os
import queue
import threading

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from receiver.platform import background
from receiver.storage import events
from receiver.storage.engines import run_again_if_it_loses_a_race, unavailable, writer_turn

log = logging.getLogger("receiver.storage")

MAX_BATCH = 256


class CommitTimeout(SQLAlchemyError):
    """The committer did not answer in time (the database hangs): treat it as a failed write."""

    unavailable = True  # see engines.unavailable


class _Pending:
    __slots__ = ("values", "done", "result", "error")

    def __init__(self, values: dict):
        self.values = values
        self.done = threading.Event()
        self.result: events.Recorded | None = None
        self.error: BaseException | None = None


class GroupCommitter:
    """`record(**fields)` stores a callback durably, sharing the commit with concurrent callers."""

    def __init__(self, engine: Engine, timeout: float):
        self.engine = engine
        self.timeout = timeout
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._conn: Connection | None = None  # used by the committer thread only
        self.commits = 0  # transactions committed (for tests and the benchmark)

    def record(self, callback) -> events.Recorded:
        """Store one callback; returns once it is committed.

        :raises sqlalchemy.exc.SQLAlchemyError: when the database could not take it.
        """
        pending = _Pending(events.event_values(callback))
        self._ensure_thread()
        self._queue.put(pending)
        # The engine's own timeouts end a stuck commit first; this bound is the last resort.
        if not pending.done.wait(self.timeout * 3 + 5):
            raise CommitTimeout("the commit did not finish in time")
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _ensure_thread(self) -> None:
        # One thread per process, started in the process that serves requests (after gunicorn's fork).
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                self._conn = None  # a connection opened before a fork belongs to the parent
                background.start("receiver-groupcommit", self._commit_a_batch, threading.Event(), log)
                self._pid = os.getpid()

    def _commit_a_batch(self) -> None:
        """Wait for a callback, then commit it with every one queued meanwhile (the committer's step)."""
        batch = [self._queue.get()]
        # On SQLite, wait for this process's turn to write before taking the rest of the
        # batch: what arrives while another process commits joins this commit instead of
        # waiting a whole turn more.
        with writer_turn(self.engine):
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(batch)
            except BaseException as exc:  # never leave a request waiting on a dead thread
                for pending in batch:
                    if not pending.done.is_set():
                        pending.error = exc
                        pending.done.set()
                if not isinstance(exc, Exception):
                    raise

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = self._store([p.values for p in batch])
            self.commits += 1
        except Exception as exc:
            if unavailable(exc):
                # The database itself cannot take writes (locked, down, timed out): retrying each
                # callback alone would only make every request wait the timeout again.
                self._fail(batch, exc)
                return
            if len(batch) > 1:
                # One callback the database refuses must not fail the others: commit each alone.
                log.warning("group commit of %d callbacks failed (%s); committing one by one",
                            len(batch), exc.__class__.__name__)
                for pending in batch:
                    self._commit([pending])
                return
            # A signed callback is stored whatever its bytes say: in its plainest form if need be.
            log.warning("the database refused a callback (%s); storing it keyed by its hash", exc.__class__.__name__)
            try:
                results = self._store([events.plain_values(batch[0].values)])
                self.commits += 1
            except Exception:
                self._fail(batch, exc)  # what the database said of the callback itself
                return
        for pending, result in zip(batch, results):
            pending.result = result
            pending.done.set()

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            pending.error = exc
            pending.done.set()

    def _store(self, batch: list[dict]) -> list[events.Recorded]:
        # A batch that lost a deadlock (a repeat counted on a row the worker is settling) runs again.
        return run_again_if_it_loses_a_race(lambda: self._store_once(batch))

    def _store_once(self, batch: list[dict]) -> list[events.Recorded]:
        # The committer keeps its own connection: a batch pays no pool checkout, and on
        # PostgreSQL no liveness round trip. A connection the server dropped while idle (a
        # restart) is replaced and the batch tried once more, so that costs no 503.
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self.engine.connect()
            try:
                with self._conn.begin():  # in the writer's turn _run holds
                    return events.insert_events(self._conn, batch)
            except SQLAlchemyError as exc:
                self._drop_connection()
                if attempt == 2 or not getattr(exc, "connection_invalidated", False):
                    raise
        raise AssertionError("unreachable")

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError:
                pass
