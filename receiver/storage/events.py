"""The stored callbacks: insert on the request path; claim, settle, release on the worker path;
replay, read and prune for the operator.

Functions take an engine (or the caller's connection) and run their own short transaction.
Nothing here parses payloads or calls handlers.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import and_, bindparam, delete, literal_column, or_, select, update
from sqlalchemy.engine import Connection, Dialect, Engine

from receiver.formats import iso, safe_text
from receiver.payloads import Callback, storable
from receiver.storage import outbox
from receiver.storage.engines import execute_prepared, insert_for, write_transaction
from receiver.storage.schema import events, rejections, sms_groups, sms_parts, workers
from receiver.storage.stats import alive_since

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


def _claimable():
    now = bindparam("now")
    live = select(workers.c.name).where(workers.c.seen_at >= bindparam("alive_since"))
    return or_(
        and_(or_(events.c.state == "pending", events.c.state == "failed"), events.c.available_at <= now),
        # A worker that died mid-event leaves it "processing": its claim is free again as soon
        # as its heartbeat stops, or at the latest when its lease runs out.
        and_(events.c.state == "processing", or_(events.c.lease_until < now, events.c.claimed_by.not_in(live))),
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
    batch instead of one per event. The same transaction writes the claimer's heartbeat, so a
    worker holding claims is never taken for dead.
    """
    now = time.time() if now is None else now
    params = {"now": now, "lease_until": now + lease_seconds, "worker": worker_name, "limit": max(1, int(limit)),
              "alive_since": alive_since(now)}
    with write_transaction(engine) as conn:
        beat(conn, worker_name, now)
        build = lambda: _claim_statement(conn.dialect.name)  # noqa: E731
        rows = execute_prepared(conn, "claim_batch", build, params).all()
    return sorted(rows, key=lambda row: row.id)  # RETURNING does not promise an order


def beat(conn: Connection, worker_name: str, now: float, processed: int | None = None,
         progress_at: float | None = None) -> None:
    """Write this worker's heartbeat (and, when given, its counters) in the caller's transaction."""
    values = {"seen_at": now}
    if processed is not None:
        values.update(processed=processed, progress_at=progress_at)
    insert = insert_for(conn)(workers).values({"name": worker_name, "processed": 0, **values})
    conn.execute(insert.on_conflict_do_update(index_elements=[workers.c.name], set_=values))


def renew(conn: Connection, worker_name: str, event_ids: list[int], lease_until: float) -> None:
    """Push back the leases of events this worker holds (a slow handler's claim must not run out)."""
    if event_ids:
        conn.execute(
            update(events)
            .where(events.c.id.in_(event_ids), events.c.state == "processing", events.c.claimed_by == worker_name)
            .values(lease_until=lease_until)
        )


def claim_holders(engine: Engine) -> list[str]:
    """The workers that hold claims now."""
    with engine.connect() as conn:
        return list(conn.execute(select(events.c.claimed_by).where(events.c.state == "processing").distinct())
                    .scalars())


def take_back(engine: Engine, worker_names: list[str]) -> int:
    """Make what these (dead) workers had claimed due again now; their claims' attempts still count."""
    if not worker_names:
        return 0
    with write_transaction(engine) as conn:
        return conn.execute(
            update(events)
            .where(events.c.state == "processing", events.c.claimed_by.in_(worker_names))
            .values(state="pending", available_at=time.time(), lease_until=None, claimed_by=None)
        ).rowcount


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


@dataclass(frozen=True)
class Outcome:
    """How one claimed event ended, as the worker decided it."""

    event_id: int
    state: str  # done, failed (due again at retry_at), dead or invalid
    error: str | None = None  # the traceback or the schema errors
    note: str | None = None  # what happened without a dispatch, e.g. a multipart part stored
    retry_at: float | None = None
    message_id: str | None = None  # done: the parsed ids, for the API's filters
    status: str | None = None
    sends: tuple = ()  # done: the Messages API bodies its handler sent, queued with this outcome

    def columns(self, now: float) -> dict:
        error = None if self.error is None else safe_text(self.error)
        if self.state == "failed":
            return {"state": "failed", "available_at": self.retry_at, "last_error": error}
        values = {"state": self.state, "processed_at": now, "last_error": error}
        if self.state == "done":
            values["note"] = self.note
            if self.message_id is not None:
                values["message_id"] = self.message_id
            if self.status is not None:
                values["status"] = self.status
        return values


def _settle_statement(names: tuple[str, ...]):
    # Only the claim holder may settle: a worker whose lease ran out must not overwrite a newer claim.
    return (
        update(events)
        .where(events.c.id == bindparam("event_id"), events.c.state == "processing",
               events.c.claimed_by == bindparam("worker"))
        .values(lease_until=None, **{name: bindparam(f"v_{name}") for name in names})
    )


def settle(engine: Engine, worker_name: str, outcomes: list[Outcome]) -> int:
    """Record how each claimed event ended, all in one transaction. Returns how many were settled."""
    now = time.time()
    by_columns: dict[tuple[str, ...], list[dict]] = {}
    for outcome in outcomes:
        values = outcome.columns(now)
        params = {"event_id": outcome.event_id, "worker": worker_name, **{f"v_{k}": v for k, v in values.items()}}
        by_columns.setdefault(tuple(sorted(values)), []).append(params)
    sends = [outbox.row_values(body, event_id=o.event_id, position=i, now=now)
             for o in outcomes if o.state == "done" for i, body in enumerate(o.sends)]
    settled = 0
    with write_transaction(engine) as conn:
        for names, params in by_columns.items():
            build = lambda: _settle_statement(names)  # noqa: E731
            many = params if len(params) > 1 else params[0]
            settled += max(0, execute_prepared(conn, "settle:" + ",".join(names), build, many).rowcount)
        # In the same transaction: a handler's messages are queued exactly when its outcome is kept.
        outbox.enqueue(conn, sends)
    return settled


def replay(engine: Engine, event_id: int) -> bool:
    """Put a finished, failed, dead or invalid event back to pending with a fresh attempt count."""
    stmt = (
        update(events)
        .where(events.c.id == event_id, events.c.state.in_(REPLAYABLE_STATES))
        .values(state="pending", attempts=0, available_at=time.time(), lease_until=None, claimed_by=None)
    )
    with write_transaction(engine) as conn:
        return conn.execute(stmt).rowcount == 1


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
