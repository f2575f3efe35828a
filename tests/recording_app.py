"""The real app, with every handler replaced by a recorder the fault tests can read from the database.

For tests that run the app in other processes (gunicorn, `flask worker`), where a monkeypatch cannot
reach: `gunicorn 'tests.recording_app:create_app()'`, `flask --app tests.recording_app worker`.
Each dispatch writes one row to test_dispatch_log (every invocation, so a re-dispatch shows) and
the callback's natural identity to test_effects with ON CONFLICT DO NOTHING: the idempotent effect
a real handler should have. Used only by tests; nothing happens at import.
"""
from __future__ import annotations

import os
import time

from flask import Flask
from sqlalchemy import BigInteger, Column, Double, Integer, MetaData, String, Table, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

import handlers
from app import create_app as build
from receiver.storage import get_storage
from receiver.storage.engines import insert_for

metadata = MetaData()

dispatch_log = Table(
    "test_dispatch_log",
    metadata,
    Column("event_id", BigInteger, nullable=False),
    Column("message_id", String(255)),
    Column("status", String(64)),
    Column("pid", Integer, nullable=False),
    Column("at", Double, nullable=False),
)

effects = Table(
    "test_effects",
    metadata,
    Column("key", String(512), primary_key=True),
)


def effect_key(kind: str, message_id: str, status: str | None) -> str:
    """The natural identity of a dispatched event: what a real handler would key its side effect on.

    `kind` is the Event's ("status" or "inbound"); the load generator computes the same key for what it sends.
    """
    return f"{kind}|{message_id}|{status or ''}"


def create_test_tables(engine: Engine) -> None:
    """Create the two recording tables; safe when several processes start at once (as the migrations do)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7306202512)"))
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        metadata.create_all(conn)
        conn.commit()


def recorder(engine: Engine):
    """A handler that records its invocation and applies the idempotent effect, in one transaction.
    With TEST_HANDLER_SECONDS set, it first works that long (a slow CRM call)."""
    insert = insert_for(engine)
    slow = float(os.environ.get("TEST_HANDLER_SECONDS") or 0)

    def record(event) -> None:
        if slow:
            time.sleep(slow)
        with engine.begin() as conn:
            conn.execute(
                dispatch_log.insert().values(
                    event_id=event.event_id,
                    message_id=event.message_id,
                    status=event.status,
                    pid=os.getpid(),
                    at=time.time(),
                )
            )
            conn.execute(
                insert(effects)
                .values(key=effect_key(event.kind, event.message_id, event.status))
                .on_conflict_do_nothing(index_elements=[effects.c.key])
            )

    return record


def create_app(test_config: dict | None = None) -> Flask:
    app = build(test_config)
    engine = get_storage(app).engine
    try:
        create_test_tables(engine)
    except OperationalError:
        pass  # a process restarted during an outage: the first one to boot made the tables
    record = recorder(engine)
    # This process only ever runs the recording app, so rewriting the tables in place is fine.
    for table in (handlers.STATUS_HANDLERS, handlers.INBOUND_HANDLERS):
        for name in table:
            table[name] = record
    handlers.DEFAULT_STATUS_HANDLER = record
    handlers.DEFAULT_INBOUND_HANDLER = record
    return app
