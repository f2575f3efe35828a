"""The worker's claims on stored callbacks: claim a batch, keep the leases alive with a heartbeat,
settle the outcomes, give back what a stopping worker will not process, take back a dead one's.

Functions take an engine (or the caller's connection) and run their own short transaction.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, literal_column, or_, select, update
from sqlalchemy.engine import Connection, Engine

from receiver.platform.formats import safe_text
from receiver.storage import outbox
from receiver.storage.engines import execute_prepared, write_transaction
from receiver.storage.schema import events
from receiver.storage.stats import beat, held_by_the_dead


def _claimable():
    now = bindparam("now")
    return or_(
        and_(or_(events.c.state == "pending", events.c.state == "failed"), events.c.available_at <= now),
        # A worker that died mid-event leaves it "processing": its claim is free again when its
        # lease runs out, or sooner once its heartbeat stops (_free_the_dead_workers_claims).
        and_(events.c.state == "processing", events.c.lease_until < now),
    )


def _free_the_dead_workers_claims(conn: Connection, now: float) -> int:
    """Claims held by workers whose heartbeat stopped are due again now, rather than when the lease runs out."""
    dead = held_by_the_dead(conn, events, "processing", now)
    return 0 if dead is None else _due_again(conn, dead, now)


def _due_again(conn: Connection, claims, now: float) -> int:
    """These claims (a condition on events) are given up: due again at `now`, their attempts still counted."""
    return conn.execute(
        update(events)
        .where(events.c.state == "processing", claims)
        .values(state="pending", available_at=now, lease_until=None, claimed_by=None)
    ).rowcount


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
    One statement claims the whole batch (after freeing a dead worker's claims): under load a
    worker pays for one transaction per batch instead of one per event. The same transaction
    writes the claimer's heartbeat, so a worker holding claims is never taken for dead.
    """
    now = time.time() if now is None else now
    params = {"now": now, "lease_until": now + lease_seconds, "worker": worker_name, "limit": max(1, int(limit))}
    with write_transaction(engine) as conn:
        beat(conn, worker_name, now)
        _free_the_dead_workers_claims(conn, now)
        build = lambda: _claim_statement(conn.dialect.name)  # noqa: E731
        rows = execute_prepared(conn, "claim_batch", build, params).all()
    return sorted(rows, key=lambda row: row.id)  # RETURNING does not promise an order


def renew(conn: Connection, worker_name: str, event_ids: list[int], lease_until: float) -> None:
    """Push back the leases of events this worker holds (a slow handler's claim must not run out).

    On PostgreSQL a row another transaction holds is skipped, not waited for: it is this worker
    settling it (waiting would deadlock with that settle, the heartbeat locking rows in another
    order) or a repeat delivery being counted. The next beat renews it, well before the lease ends.
    """
    if not event_ids:
        return
    mine = and_(events.c.id.in_(event_ids), events.c.state == "processing", events.c.claimed_by == worker_name)
    if conn.dialect.name == "postgresql":
        mine = events.c.id.in_(select(events.c.id).where(mine).with_for_update(skip_locked=True))
    conn.execute(update(events).where(mine).values(lease_until=lease_until))


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
        return _due_again(conn, events.c.claimed_by.in_(worker_names), time.time())


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


def settle(engine: Engine, worker_name: str, outcomes: list[Outcome], per_minute: int = 0) -> int:
    """Record how each claimed event ended, all in one transaction. Returns how many were settled. The sends
    of the handlers are queued as the loop guards admit them (`per_minute`: REPLY_MAX_PER_MINUTE)."""
    now = time.time()
    by_columns: dict[tuple[str, ...], list[dict]] = {}
    for outcome in outcomes:
        values = outcome.columns(now)
        params = {"event_id": outcome.event_id, "worker": worker_name, **{f"v_{k}": v for k, v in values.items()}}
        by_columns.setdefault(tuple(sorted(values)), []).append(params)
    bodies = [(o.event_id, i, body) for o in outcomes if o.state == "done" for i, body in enumerate(o.sends)]
    sends = [outbox.row_values(body, event_id=event_id, position=i, now=now) for event_id, i, body in bodies]
    once_every = [getattr(body, "once_every", None) for _, _, body in bodies]
    settled = 0
    with write_transaction(engine) as conn:
        for names, params in by_columns.items():
            build = lambda: _settle_statement(names)  # noqa: E731
            many = params if len(params) > 1 else params[0]
            settled += max(0, execute_prepared(conn, "settle:" + ",".join(names), build, many).rowcount)
        # In the same transaction: a handler's messages are queued exactly when its outcome is kept.
        outbox.enqueue(conn, sends, per_minute=per_minute, once_every=once_every)
    return settled
