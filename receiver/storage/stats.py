"""How the queue is doing, in one definition that metrics, doctor, readiness, the API and the console share.

A worker writes a heartbeat every HEARTBEAT_SECONDS; one that has not for ALIVE_SECONDS is dead.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection, Engine

from receiver.storage.engines import insert_for
from receiver.storage.schema import events, workers

STATES = ("pending", "processing", "failed", "done", "dead", "invalid")
HEARTBEAT_SECONDS = 5.0
ALIVE_SECONDS = 3 * HEARTBEAT_SECONDS
# A backlog whose oldest due event has waited this long while no worker finished anything has stalled.
STALL_SECONDS = 60.0


@dataclass(frozen=True)
class Stats:
    by_state: dict[str, int]  # every state, 0 included
    due: int  # pending, or failed whose retry time has come
    oldest_due_seconds: float  # how long the oldest due event has been waiting (0 when none is)
    stuck: int  # processing, but its worker is dead or its lease ran out
    live_workers: int  # heartbeats within ALIVE_SECONDS
    last_heartbeat_seconds: float | None  # how long ago the newest heartbeat was written (None: never)
    last_progress_seconds: float | None  # how long ago a worker last finished an event (None: never)

    @property
    def stalled(self) -> bool:
        """Events have been due for STALL_SECONDS and no worker finished one in that time."""
        idle = self.last_progress_seconds is None or self.last_progress_seconds > STALL_SECONDS
        return self.oldest_due_seconds > STALL_SECONDS and idle

    @property
    def backlog(self) -> int:
        """Events not finished yet: pending, processing, or failed and waiting to retry."""
        return sum(self.by_state[state] for state in ("pending", "processing", "failed"))


def alive_since(now: float) -> float:
    """The oldest heartbeat of a worker that still counts as alive."""
    return now - ALIVE_SECONDS


def live_names(now: float):
    """The names of the workers alive at `now`, as a subquery."""
    return select(workers.c.name).where(workers.c.seen_at >= alive_since(now))


def held_by_the_dead(conn: Connection, table, state: str, now: float):
    """The claims in `table` (its rows in `state`) of workers whose heartbeat stopped, as a condition on
    their ids and holders; None when there are none.

    Named in a read of their own, then touched by id and holder: one UPDATE testing the heartbeats
    would, on PostgreSQL, recheck a row another worker claimed meanwhile against the statement's
    older view of `workers`, where that worker's first heartbeat (committed with its claim) is
    missing, and take the row from under a live worker. By id as well as by holder: a worker that
    comes back between the read and the UPDATE keeps what it claimed in that moment.
    """
    held = conn.execute(
        select(table.c.id, table.c.claimed_by).where(table.c.state == state, table.c.claimed_by.not_in(live_names(now)))
    ).all()
    if not held:
        return None
    return and_(table.c.id.in_([row.id for row in held]), table.c.claimed_by.in_({row.claimed_by for row in held}))


def beat(conn: Connection, worker_name: str, now: float, processed: int | None = None,
         progress_at: float | None = None) -> None:
    """Write this worker's heartbeat (and, when given, its counters) in the caller's transaction.

    Every claim writes one in its own transaction: a worker holding claims, events or sends, is
    never seen without a heartbeat at least as new as its claim."""
    values = {"seen_at": now}
    if processed is not None:
        values.update(processed=processed, progress_at=progress_at)
    insert = insert_for(conn)(workers).values({"name": worker_name, "processed": 0, **values})
    conn.execute(insert.on_conflict_do_update(index_elements=[workers.c.name], set_=values))


def live(engine: Engine, now: float | None = None) -> int:
    """How many workers wrote a heartbeat within ALIVE_SECONDS."""
    now = time.time() if now is None else now
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(workers.c.seen_at >= alive_since(now))).scalar()


def collect(engine: Engine, now: float | None = None, states: tuple[str, ...] = STATES) -> Stats:
    """Read the queue's figures in one connection; `by_state` counts `states` (all of them by default:
    counting `done` reads the whole state index, most of the cost on a million events)."""
    now = time.time() if now is None else now
    due = and_(events.c.state.in_(("pending", "failed")), events.c.available_at <= now)
    live = live_names(now)
    stuck = and_(events.c.state == "processing",
                 or_(events.c.lease_until < now, events.c.claimed_by.not_in(live)))
    count = select(events.c.state, func.count()).group_by(events.c.state)
    if states != STATES:
        count = count.where(events.c.state.in_(states))
    with engine.connect() as conn:
        counts = dict(conn.execute(count).all())
        due_count, oldest = conn.execute(select(func.count(), func.min(events.c.available_at)).where(due)).one()
        stuck_count = conn.execute(select(func.count()).where(stuck)).scalar()
        alive, newest, progress = conn.execute(
            select(func.count().filter(workers.c.seen_at >= alive_since(now)), func.max(workers.c.seen_at),
                   func.max(workers.c.progress_at))
        ).one()
    return Stats(
        by_state={state: counts.get(state, 0) for state in states},
        due=due_count,
        oldest_due_seconds=0.0 if oldest is None else max(0.0, now - oldest),
        stuck=stuck_count,
        live_workers=alive,
        last_heartbeat_seconds=None if newest is None else max(0.0, now - newest),
        last_progress_seconds=None if progress is None else max(0.0, now - progress),
    )
