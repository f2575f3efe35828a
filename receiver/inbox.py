"""The inbox of stored callbacks: record on the request path, claim and settle on the worker path.

Every function takes an engine and runs its own short transaction. Nothing here parses payloads
or calls handlers.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import and_, bindparam, delete, func, literal_column, or_, select, update
from sqlalchemy.engine import Connection, Dialect, Engine

from receiver.db import (
    events,
    execute_prepared,
    insert_for,
    iso,
    rejections,
    sms_groups,
    sms_parts,
    write_transaction,
)

CLAIMABLE_STATES = ("pending", "failed")
# Only finished events are ever pruned: pending, processing, failed and dead ones are kept.
PRUNABLE_STATES = ("done", "invalid")
# States an operator can put back to pending.
REPLAYABLE_STATES = ("done", "failed", "dead", "invalid")


@dataclass(frozen=True)
class Recorded:
    id: int
    deliveries: int

    @property
    def duplicate(self) -> bool:
        return self.deliveries > 1


def event_values(
    *,
    kind: str,
    dedup_key: str,
    body: bytes,
    query: str = "",
    content_type: str = "",
    headers: dict | None = None,
    message_id: str | None = None,
    status: str | None = None,
    now: float | None = None,
) -> dict:
    """The column values of a newly received callback."""
    now = time.time() if now is None else now
    return {
        "kind": kind,
        "dedup_key": dedup_key,
        "body": body,
        "query": query,
        "content_type": content_type[:255],
        "headers": json.dumps(headers or {}),
        "message_id": message_id,
        "status": status,
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
    "kind", "dedup_key", "body", "query", "content_type", "headers", "message_id", "status",
    "received_at", "last_delivery_at", "deliveries", "state", "attempts", "available_at",
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


def record_event(engine: Engine, **fields) -> Recorded:
    """Store one callback in a transaction of its own (see receiver.groupcommit for the request path).

    :raises sqlalchemy.exc.SQLAlchemyError: when the database cannot take the write.
    """
    with write_transaction(engine) as conn:
        return insert_events(conn, [event_values(**fields)])[0]


def _claimable():
    now = bindparam("now")
    return or_(
        and_(or_(events.c.state == "pending", events.c.state == "failed"), events.c.available_at <= now),
        # A worker that died mid-event leaves it "processing"; its lease running out frees it.
        and_(events.c.state == "processing", events.c.lease_until < now),
    )


def _claim_statement(dialect_name: str):
    candidates = select(events.c.id).where(_claimable()).order_by(events.c.id).limit(bindparam("limit"))
    if dialect_name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    return (
        update(events)
        .where(events.c.id.in_(candidates))
        .where(_claimable())
        .values(
            state="processing",
            attempts=events.c.attempts + literal_column("1"),
            lease_until=bindparam("lease_until"),
            claimed_by=bindparam("worker"),
        )
        .returning(*events.c)
    )


def claim_batch(engine: Engine, worker_name: str, lease_seconds: float, limit: int, now: float | None = None) -> list:
    """Claim up to `limit` of the oldest events that are due, for this worker alone, oldest first.

    PostgreSQL: FOR UPDATE SKIP LOCKED, so workers on several machines never take the same row.
    SQLite: one conditional UPDATE; SQLite runs a write statement under its single write lock.
    One statement claims the whole batch: under load a worker pays for one transaction per
    batch instead of one per event.
    """
    now = time.time() if now is None else now
    params = {"now": now, "lease_until": now + lease_seconds, "worker": worker_name, "limit": max(1, int(limit))}
    with write_transaction(engine) as conn:
        build = lambda: _claim_statement(conn.dialect.name)  # noqa: E731
        rows = execute_prepared(conn, "claim_batch", build, params).all()
    return sorted(rows, key=lambda row: row.id)  # RETURNING does not promise an order


def claim_next(engine: Engine, worker_name: str, lease_seconds: float, now: float | None = None):
    """Claim the oldest event that is due; None when there is none."""
    rows = claim_batch(engine, worker_name, lease_seconds, 1, now)
    return rows[0] if rows else None


def release(engine: Engine, worker_name: str, event_ids: list[int]) -> int:
    """Give back claimed events this worker will not process (it is stopping): due again at once,
    with the claim's attempt uncounted."""
    if not event_ids:
        return 0
    stmt = (
        update(events)
        .where(events.c.id.in_(event_ids), events.c.state == "processing", events.c.claimed_by == worker_name)
        .values(state="pending", attempts=events.c.attempts - literal_column("1"), lease_until=None, claimed_by=None)
    )
    with write_transaction(engine) as conn:
        return conn.execute(stmt).rowcount


def _settle_statement(names: tuple[str, ...]):
    # Only the claim holder may settle: a worker whose lease ran out must not overwrite a newer claim.
    return (
        update(events)
        .where(events.c.id == bindparam("event_id"), events.c.state == "processing",
               events.c.claimed_by == bindparam("worker"))
        .values(lease_until=None, **{name: bindparam(f"v_{name}") for name in names})
    )


def settle(engine: Engine, worker_name: str, outcomes: list[tuple[int, dict]]) -> int:
    """Record how each claimed event ended ((event id, column values) pairs, from done_values,
    failed_values or invalid_values), all in one transaction. Returns how many were settled.
    mark_done is the one-event form."""
    by_columns: dict[tuple[str, ...], list[dict]] = {}
    for event_id, values in outcomes:
        params = {"event_id": event_id, "worker": worker_name, **{f"v_{k}": v for k, v in values.items()}}
        by_columns.setdefault(tuple(sorted(values)), []).append(params)
    settled = 0
    with write_transaction(engine) as conn:
        for names, params in by_columns.items():
            build = lambda: _settle_statement(names)  # noqa: E731
            many = params if len(params) > 1 else params[0]
            settled += max(0, execute_prepared(conn, "settle:" + ",".join(names), build, many).rowcount)
    return settled


def done_values(*, message_id=None, status=None, note=None) -> dict:
    """The handler returned (or there was nothing to dispatch yet): the event is finished."""
    values = {"state": "done", "processed_at": time.time(), "last_error": None, "note": note}
    if message_id is not None:
        values["message_id"] = message_id
    if status is not None:
        values["status"] = status
    return values


def invalid_values(errors: dict) -> dict:
    """The payload does not fit its schema: keep it, with the errors, and never retry on its own."""
    return {"state": "invalid", "processed_at": time.time(), "last_error": json.dumps(errors)}


def failed_values(*, attempts: int, error: str, max_attempts: int, base: float, cap: float) -> dict:
    """The handler raised: retry later with backoff, or after max_attempts keep the event as dead."""
    now = time.time()
    if attempts >= max_attempts:
        return {"state": "dead", "processed_at": now, "last_error": error}
    return {"state": "failed", "available_at": now + retry_delay(attempts, base, cap), "last_error": error}


def mark_done(engine: Engine, event_id: int, worker_name: str, *, message_id=None, status=None, note=None) -> bool:
    """Settle one event as done (see settle for a batch)."""
    return settle(engine, worker_name, [(event_id, done_values(message_id=message_id, status=status, note=note))]) == 1


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: base, 2*base, 4*base ... capped."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    return delay * random.uniform(0.8, 1.0)


def replay(engine: Engine, event_id: int) -> bool:
    """Put a finished, failed, dead or invalid event back to pending with a fresh attempt count."""
    stmt = (
        update(events)
        .where(events.c.id == event_id, events.c.state.in_(REPLAYABLE_STATES))
        .values(state="pending", attempts=0, available_at=time.time(), lease_until=None, claimed_by=None)
    )
    with write_transaction(engine) as conn:
        return conn.execute(stmt).rowcount == 1


def get_event(engine: Engine, event_id: int):
    with engine.connect() as conn:
        return conn.execute(select(events).where(events.c.id == event_id)).first()


def list_events(engine: Engine, *, kind=None, state=None, message_id=None, limit: int = 50):
    """Newest first, filtered."""
    stmt = select(events).order_by(events.c.id.desc()).limit(max(1, min(limit, 1000)))
    if kind:
        stmt = stmt.where(events.c.kind == kind)
    if state:
        stmt = stmt.where(events.c.state == state)
    if message_id:
        stmt = stmt.where(events.c.message_id == message_id)
    with engine.connect() as conn:
        return conn.execute(stmt).all()


def count_by_state(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(events.c.state, func.count()).group_by(events.c.state)).all()
    return {state: count for state, count in rows}


def event_summary(row) -> dict:
    """The public JSON shape of a stored event."""
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "message_id": row.message_id,
        "status": row.status,
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
        "headers": json.loads(row.headers or "{}"),
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


def parse_age(text: str) -> float:
    """Seconds in "30d", "12h", "90m" or "3600s" (a bare number is seconds).

    :raises ValueError: for anything else.
    """
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip().lower()
    unit = units.get(text[-1:]) if text[-1:].isalpha() else 1
    number = text[:-1] if text[-1:].isalpha() else text
    if unit is None or not number.replace(".", "", 1).isdigit():
        raise ValueError(f"{text!r} is not an age like 30d, 12h, 90m or 3600s")
    return float(number) * unit
