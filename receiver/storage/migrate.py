"""Schema migrations: bring a database to the newest revision in migrations/versions/ with Alembic.

Called when the app starts (storage.init_app) and by `flask init-db`, the release step: long migrations
belong there, since gunicorn kills a worker whose boot outlasts its timeout. Receives an engine; must
not import Flask or the app. A schema change is a new revision file, never an edit to an old one.
"""
from __future__ import annotations

import logging
import threading
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("receiver.migrate")

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

# The PostgreSQL advisory lock that makes processes starting together migrate one at a time.
LOCK_KEY = 7306202511

# Alembic's `context` and `op` are module-level proxies: one migration run per process at a time.
_run_lock = threading.Lock()


def upgrade(engine: Engine) -> None:
    """Apply the migrations this database lacks. Safe when several processes start at once."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return  # the usual start: nothing to do, no lock taken
    log.info("migrating the database from revision %s to %s", current, head)
    with _run_lock, engine.begin() as conn:
        _serialize(conn)
        _run(command.upgrade, conn, "head")


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None before the first migration."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision in migrations/versions/.

    :raises alembic.util.CommandError: when the revisions have more than one head.
    """
    return ScriptDirectory.from_config(_config()).get_current_head()


def _serialize(conn: Connection) -> None:
    """Make a second process starting now wait here until this one has committed."""
    if conn.dialect.name == "postgresql":
        # Migrations are not requests: lift make_engine's statement_timeout for this transaction,
        # for the lock wait and for a long ALTER alike. Both end at commit.
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        # Take the write lock now, not at the first write: pysqlite would otherwise run each
        # CREATE TABLE in a transaction of its own, and two processes would both try to create.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _run(alembic_command, conn: Connection, revision: str) -> None:
    config = _config()
    config.attributes["connection"] = conn  # migrations/env.py runs on this connection
    alembic_command(config, revision)


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config
