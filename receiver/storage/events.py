"""The stored callbacks: insert on the request path; replay, read and prune for the operator.
The worker's claims on them are in receiver.storage.claims.

Functions take an engine (or the caller's connection) and run their own short transaction.
Nothing here parses payloads or calls handlers.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Connection, Dialect, Engine

from receiver.platform.formats import iso, storable, stored_object
from receiver.storage.engines import insert_for, write_transaction
from receiver.storage.schema import events, rejections, sms_groups, sms_parts

# Only finished events are ever pruned: pending, processing, failed and dead ones are kept.
PRUNABLE_STATES = ("done", "invalid")
# States an operator can put back to pending.
REPLAYABLE_STATES = ("done", "failed", "dead", "invalid")


@dataclass(frozen=True)
class Callback:
    """One verified callback as the request path stores it: the bytes as received, and what it is."""

    kind: str
    body: bytes
    query: str
    content_type: str
    dedup_key: str
    message_id: str | None = None
    status: str | None = None
    channel: str | None = None
    api_key: str | None = None  # whose signature secret verified it (claimed, when verification is off)
    application_id: str | None = None
    headers: dict = field(default_factory=dict)  # the few request headers and token claims worth keeping


@dataclass(frozen=True)
class Recorded:
    id: int
    deliveries: int

    @property
    def duplicate(self) -> bool:
        return self.deliveries > 1


def event_values(callback: Callback, now: float | None = None) -> dict:
    """The column values of a newly received callback: the bytes as they came, text columns made storable.

    The query string is kept as received except NUL, written %00 (which parses the same);
    a content type that is not storable text is dropped (the body's first byte still tells JSON).
    """
    now = time.time() if now is None else now
    return {
        "kind": callback.kind,
        "dedup_key": callback.dedup_key,
        "body": callback.body,
        "query": callback.query.replace("\x00", "%00"),
        "content_type": storable(callback.content_type, 255) or "",
        "headers": json.dumps(callback.headers),
        "message_id": callback.message_id,
        "status": callback.status,
        "channel": callback.channel,
        "api_key": callback.api_key,
        "application_id": callback.application_id,
        "received_at": now,
        "last_delivery_at": now,
        "deliveries": 1,
        "state": "pending",
        "attempts": 0,
        "available_at": now,
    }


@lru_cache(maxsize=None)
def _insert_sql(dialect: Dialect, rows: int) -> tuple[str, tuple[str, ...] | None]:
    # Compiled once per dialect and batch size and run with exec_driver_sql: building and
    # compiling the Core statement on every request cost more CPU than the rest of the request path.
    insert = insert_for(dialect)(events)
    stmt = (
        insert.values([{name: bindparam(f"{name}_{i}") for name in RECORD_COLUMNS} for i in range(rows)])
        # One statement, so a repeat racing its original can never create a second row.
        .on_conflict_do_update(
            index_elements=[events.c.kind, events.c.dedup_key],
            set_={"deliveries": events.c.deliveries + insert.excluded.deliveries,
                  "last_delivery_at": insert.excluded.last_delivery_at},
        )
        .returning(events.c.id, events.c.deliveries, events.c.kind, events.c.dedup_key)
    )
    compiled = stmt.compile(dialect=dialect)
    return str(compiled), compiled.positiontup


RECORD_COLUMNS = (
    "kind", "dedup_key", "body", "query", "content_type", "headers", "message_id", "status", "channel",
    "api_key", "application_id", "received_at", "last_delivery_at", "deliveries", "state", "attempts", "available_at",
)


def insert_events(conn: Connection, batch: list[dict]) -> list[Recorded]:
    """Insert callbacks in the caller's transaction, in one statement; a callback already stored
    (or repeated within the batch) counts one more delivery instead. One Recorded per callback, in order.

    One statement for the whole batch: on SQLite the write lock is held for one step instead of
    one per row (each step hands the GIL to other threads, and getting it back can take long
    under load); on PostgreSQL it is one round trip.
    """
    first: dict[tuple[str, str], int] = {}
    rows: list[dict] = []
    for values in batch:
        key = (values["kind"], values["dedup_key"])
        if key in first:  # the same statement may not touch one row twice (PostgreSQL refuses)
            rows[first[key]]["deliveries"] += 1
        else:
            first[key] = len(rows)
            rows.append(dict(values))
    sql, positions = _insert_sql(conn.dialect, len(rows))
    named = {f"{name}_{i}": row[name] for i, row in enumerate(rows) for name in RECORD_COLUMNS}
    params = tuple(named[name] for name in positions) if positions else named
    stored = {(kind, dedup_key): (event_id, deliveries)
              for event_id, deliveries, kind, dedup_key in conn.exec_driver_sql(sql, params).all()}
    results, seen = [], dict.fromkeys(first, 0)
    for values in batch:
        key = (values["kind"], values["dedup_key"])
        event_id, deliveries = stored[key]
        seen[key] += 1
        # This delivery's number: the total now, less this batch's later repeats.
        results.append(Recorded(id=event_id, deliveries=deliveries - rows[first[key]]["deliveries"] + seen[key]))
    return results


def plain_values(values: dict) -> dict:
    """A callback the database refused, in the plainest form it can take: keyed by the hash of its
    bytes, without the ids and headers read from it. The worker keeps it as invalid with the reason."""
    digest = hashlib.sha256(values["body"] + b"?" + values["query"].encode("utf-8", "backslashreplace")).hexdigest()
    return {**values, "dedup_key": "sha256:" + digest, "message_id": None, "status": None, "headers": "{}",
            "channel": None, "api_key": None, "application_id": None,
            "query": values["query"].encode("ascii", "backslashreplace").decode("ascii"), "content_type": ""}


def record_event(engine: Engine, callback: Callback, now: float | None = None) -> Recorded:
    """Store one callback in a transaction of its own (see storage.groupcommit for the request path).

    :raises sqlalchemy.exc.SQLAlchemyError: when the database cannot take the write.
    """
    with write_transaction(engine) as conn:
        return insert_events(conn, [event_values(callback, now)])[0]


def replay(engine: Engine, event_ids: list[int], states: tuple[str, ...] = REPLAYABLE_STATES) -> int:
    """Put those of these events that are in `states` back to pending with a fresh attempt count;
    how many moved. An event that left those states meanwhile (retried and done) is left alone."""
    if not event_ids:
        return 0
    stmt = (
        update(events)
        .where(events.c.id.in_(event_ids), events.c.state.in_(states))
        .values(state="pending", attempts=0, available_at=time.time(), lease_until=None, claimed_by=None)
    )
    with write_transaction(engine) as conn:
        return conn.execute(stmt).rowcount


def stored_row(engine: Engine, event_id: int):
    """The row of one event; None when there is no such event."""
    with engine.connect() as conn:
        return conn.execute(select(events).where(events.c.id == event_id)).first()


def get_event(engine: Engine, event_id: int) -> dict | None:
    """Everything stored for one event (see event_detail); None when there is no such event."""
    row = stored_row(engine, event_id)
    return None if row is None else event_detail(row)


def list_events(engine: Engine, *, kind=None, state=None, message_id=None, limit: int = 50) -> list[dict]:
    """Newest first, filtered; each as event_summary."""
    stmt = select(events).order_by(events.c.id.desc()).limit(max(1, min(limit, 1000)))
    if kind:
        stmt = stmt.where(events.c.kind == kind)
    if state:
        stmt = stmt.where(events.c.state == state)
    if message_id:
        stmt = stmt.where(events.c.message_id == message_id)
    with engine.connect() as conn:
        return [event_summary(row) for row in conn.execute(stmt).all()]


def event_summary(row) -> dict:
    """The public JSON shape of a stored event."""
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "message_id": row.message_id,
        "status": row.status,
        "channel": row.channel,
        "api_key": row.api_key,
        "application_id": row.application_id,
        "received_at": iso(row.received_at),
        "deliveries": row.deliveries,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "note": row.note,
    }


def event_detail(row) -> dict:
    """Everything stored for one event: the summary plus the request as received."""
    body = row.body
    try:
        body_text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body_text, encoding = body.hex(), "hex"
    return {
        **event_summary(row),
        "query": row.query,
        "content_type": row.content_type,
        "headers": stored_object(row.headers),
        "body": body_text,
        "body_encoding": encoding,
        "processed_at": iso(row.processed_at),
        "last_delivery_at": iso(row.last_delivery_at),
    }


def prune(engine: Engine, older_than_seconds: float, now: float | None = None) -> dict[str, int]:
    """Delete finished events (done, invalid) received before the cutoff, with old rejections and
    joined SMS parts. Never touches pending, processing, failed or dead events, nor message state."""
    cutoff = (time.time() if now is None else now) - older_than_seconds
    with write_transaction(engine) as conn:
        deleted_events = conn.execute(
            delete(events).where(events.c.state.in_(PRUNABLE_STATES), events.c.received_at < cutoff)
        ).rowcount
        deleted_rejections = conn.execute(delete(rejections).where(rejections.c.at < cutoff)).rowcount
        finished_groups = select(sms_groups.c.group_key).where(
            sms_groups.c.completed_by.is_not(None), sms_groups.c.first_seen < cutoff
        )
        conn.execute(delete(sms_parts).where(sms_parts.c.group_key.in_(finished_groups)))
        conn.execute(
            delete(sms_groups).where(sms_groups.c.completed_by.is_not(None), sms_groups.c.first_seen < cutoff)
        )
    return {"events": deleted_events, "rejections": deleted_rejections}
