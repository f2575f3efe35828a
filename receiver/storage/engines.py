"""Connections: the database URL, engines with the durability settings, and SQLite's writer turns.

SQLAlchemy Core only. The embedded default is a SQLite file under instance/ in WAL mode with
synchronous=FULL, so a committed write survives power loss; DATABASE_URL selects PostgreSQL.
Only receiver.storage uses this module.
"""
from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

try:
    import fcntl
except ImportError:  # Windows: threads of one process still take turns
    fcntl = None

log = logging.getLogger("receiver.storage")
T = TypeVar("T")


def insert_for(bind):
    """The dialect's INSERT, which has on_conflict_do_nothing/on_conflict_do_update.

    `bind` is an engine, a connection or a dialect.
    """
    dialect = getattr(bind, "dialect", bind)
    return pg_insert if dialect.name == "postgresql" else sqlite_insert


def database_url(configured: str | None, instance_path: str) -> str:
    """The SQLAlchemy URL to use: DATABASE_URL (Heroku spellings accepted) or the embedded file."""
    if not configured:
        return "sqlite:///" + os.path.join(instance_path, "receiver.sqlite3")
    for prefix in ("postgres://", "postgresql://"):
        if configured.startswith(prefix):
            return "postgresql+psycopg://" + configured[len(prefix):]
    return configured


def make_engine(url: str, timeout: float = 5.0, *, durable: bool = True) -> Engine:
    """An engine with the durability settings this project relies on.

    `timeout` bounds how long a statement waits for a busy or unreachable database, so a
    request answers 503 well within Vonage's 15 s instead of hanging. `durable=False` is for the
    worker's bookkeeping (claims, message state, done marks): a commit does not wait for the
    disk, because losing the last ones in a power cut only means an idempotent handler runs
    again. The callbacks themselves are always written with durable=True before the 200.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": timeout})
        # FULL: the WAL is fsynced at every commit, so an acknowledged callback survives power loss.
        # NORMAL: no fsync at commit (WAL mode stays consistent; the next FULL commit flushes it too).
        synchronous = "FULL" if durable else "NORMAL"
        event.listen(engine, "connect", lambda dbapi_connection, _: _sqlite_pragmas(dbapi_connection, synchronous))
        return engine
    return create_engine(
        url,
        # Test each pooled connection before a request uses it (a database restart would
        # otherwise cost one 503); the worker skips the round trip and retries on its own.
        pool_pre_ping=durable,
        pool_size=5,
        max_overflow=5,
        pool_timeout=timeout,
        connect_args={
            "connect_timeout": max(1, int(timeout)),
            "options": f"-c statement_timeout={int(timeout * 1000)} "
            f"-c synchronous_commit={'on' if durable else 'off'}",
        },
    )


def _sqlite_pragmas(dbapi_connection, synchronous: str) -> None:
    cursor = dbapi_connection.cursor()
    # Switching a new file to WAL needs it to itself, and SQLite answers "database is locked" at
    # once (no busy wait) while another process is switching it: gunicorn's workers all open
    # the file together on the first start. WAL is persistent, so this loop runs once per file.
    for attempt in range(100):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 99:
                raise
            time.sleep(0.05)
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.close()


_writer_locks: dict[str, "_SqliteWriterLock"] = {}
_writer_locks_guard = threading.Lock()


class _SqliteWriterLock:
    """Turns for the writers of one SQLite file: a thread lock within this process, and an
    advisory file lock (flock) across the processes of this machine, where fcntl exists."""

    def __init__(self, database: str):
        self._thread_lock = threading.Lock()
        self._path = database + ".writer-lock" if database and database != ":memory:" else None
        self._fd: int | None = None
        self._pid: int | None = None

    def __enter__(self):
        self._thread_lock.acquire()
        if fcntl is not None and self._path:
            try:
                if self._pid != os.getpid():  # a forked child needs its own open file
                    self._fd, self._pid = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError:
                pass  # no lock file (read-only folder): SQLite's own locking still keeps data safe
        return self

    def __exit__(self, *exc):
        if fcntl is not None and self._fd is not None and self._pid == os.getpid():
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            except OSError:
                pass
        self._thread_lock.release()


@contextmanager
def writer_turn(engine: Engine) -> Iterator[None]:
    """On SQLite, wait for this file's other writers to finish, and hold the turn; elsewhere nothing.

    SQLite has one writer at a time, and a writer that finds it busy waits in SQLite's busy
    handler, which sleeps 1 ms, then 2, 5 ... up to 100 ms between tries: under load, writers
    pile up in those sleeps. A lock hands the database to the next writer the moment the
    previous one commits: a thread lock within the process, a file lock across processes.
    """
    if engine.dialect.name != "sqlite":
        yield
        return
    database = str(engine.url.database)
    with _writer_locks_guard:
        lock = _writer_locks.setdefault(database, _SqliteWriterLock(database))
    with lock:
        yield


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()`, in this writer's turn (see writer_turn)."""
    with writer_turn(engine), engine.begin() as conn:
        yield conn


_prepared: dict[tuple[str, str], tuple[str, tuple | None, object]] = {}


def execute_prepared(conn: Connection, name: str, build: Callable[[], object], params: dict | list[dict]):
    """Run the statement `build()` returns, built and compiled once per dialect, with `params`
    as the values of its bindparam()s (a list of dicts runs it once for each, as executemany).

    Building a Core statement and computing its cache key costs several times more CPU than
    running it; the worker runs its few statements for every event, so they are compiled once.
    Values pass to the driver as they are (no SQLAlchemy type processing): use plain str, int,
    float, bytes and None.
    """
    key = (conn.dialect.name, name)
    entry = _prepared.get(key)
    if entry is None:
        compiled = build().compile(dialect=conn.dialect)
        entry = _prepared[key] = (str(compiled), compiled.positiontup, compiled)
    sql, positions, compiled = entry

    def driver_params(one: dict):
        values = compiled.construct_params(one)
        return tuple(values[n] for n in positions) if positions else values

    if isinstance(params, list):
        return conn.exec_driver_sql(sql, [driver_params(one) for one in params])
    return conn.exec_driver_sql(sql, driver_params(params))


def unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database itself cannot work now (down, locked, timed out, connection
    lost), as opposed to refusing one statement's data: the caller should back off and retry later."""
    return isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)) or bool(
        getattr(exc, "connection_invalidated", False) or getattr(exc, "unavailable", False))


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back because
# it lost a race with another one, not because of what it wrote.
_RACE_LOST = frozenset({"40P01", "40001"})
RACE_ATTEMPTS = 5  # a transaction that lost a deadlock is run this many times in all


def lost_a_race(exc: BaseException) -> bool:
    """True when the database rolled the transaction back for colliding with another (a deadlock):
    nothing of it was kept, and running it again is safe and will most likely succeed."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _RACE_LOST


def run_again_if_it_loses_a_race(transaction: Callable[[], T]) -> T:
    """`transaction()` (one whole transaction), run again while the database rolls it back for a
    deadlock, up to RACE_ATTEMPTS times in all. Each time after a pause that lets the transaction it
    lost to take the rows first: run again at once, it would often take them first itself and meet
    the same deadlock."""
    for attempt in range(1, RACE_ATTEMPTS):
        try:
            return transaction()
        except Exception as exc:
            if not lost_a_race(exc):
                raise
            log.info("a transaction met a deadlock (attempt %d); running it again", attempt)
            time.sleep(random.uniform(0.02, 0.1) * attempt)
    return transaction()


def unreachable_reason(engine: Engine) -> str | None:
    """None when the database answers a trivial query, else why not (the error's first line)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # any driver error means "not ready"
        return f"{exc.__class__.__name__}: {exc}".splitlines()[0]
