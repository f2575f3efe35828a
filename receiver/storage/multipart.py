"""Joining SMS API multipart messages: parts arrive separately and out of order.

Each part is stored as it comes; the part that completes its group (or the first one processed
after the group timed out) carries the joined message to the handler. Never dispatches itself.
"""
from __future__ import annotations

import dataclasses
import time

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine

from receiver.storage.engines import insert_for, write_transaction
from receiver.storage.schema import events, sms_groups, sms_parts
from schemas import Event


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def part_info(event: Event) -> tuple[str, int, int] | None:
    """(group key, part number, total) of a multipart SMS, or None for a whole message."""
    raw = event.raw
    ref, part, total = raw.get("concat-ref"), _int(raw.get("concat-part")), _int(raw.get("concat-total"))
    if ref is None or part is None or total is None or total < 2 or not 1 <= part <= total:
        return None
    # concat-ref is only unique per sender and recipient.
    return f"{raw.get('msisdn', '')}|{raw.get('to', '')}|{ref}", part, total


def collect(conn: Connection, event: Event, timeout: float, now: float | None = None) -> Event | None:
    """Store this part, in the caller's transaction; return the message to dispatch for it, or None
    while parts are missing.

    Safe to call again for the same event (a retry gets the same joined message back).
    """
    key, part, total = part_info(event)
    now = time.time() if now is None else now
    insert = insert_for(conn)
    conn.execute(
        insert(sms_groups)
        .values(group_key=key, total=total, first_seen=now, incomplete=False)
        .on_conflict_do_nothing(index_elements=[sms_groups.c.group_key])
    )
    # Lock the group: on PostgreSQL two workers holding its last two parts must not both
    # count before either commits (each would see one part missing and nobody would join).
    group = conn.execute(
        select(sms_groups).where(sms_groups.c.group_key == key).with_for_update()
    ).one()
    conn.execute(
        insert(sms_parts)
        .values(
            group_key=key,
            part=part,
            total=total,
            event_id=event.event_id,
            text=event.text,
            message_id=event.message_id,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=[sms_parts.c.group_key, sms_parts.c.part])
    )
    completed_by, incomplete = group.completed_by, group.incomplete
    if completed_by is None:
        have = conn.execute(select(func.count()).where(sms_parts.c.group_key == key)).scalar()
        if have < total and now - group.first_seen < timeout:
            return None
        completed_by, incomplete = event.event_id, have < total
        conn.execute(
            update(sms_groups)
            .where(sms_groups.c.group_key == key)
            .values(completed_by=completed_by, incomplete=incomplete)
        )
        conn.execute(
            update(sms_parts)
            .where(sms_parts.c.group_key == key, sms_parts.c.dispatched_by.is_(None))
            .values(dispatched_by=event.event_id)
        )
    else:
        # A part that arrives after its group was dispatched goes out on its own.
        conn.execute(
            update(sms_parts)
            .where(sms_parts.c.group_key == key, sms_parts.c.part == part, sms_parts.c.dispatched_by.is_(None))
            .values(dispatched_by=event.event_id)
        )
        incomplete = True
    mine = conn.execute(
        select(sms_parts)
        .where(sms_parts.c.group_key == key, sms_parts.c.dispatched_by == event.event_id)
        .order_by(sms_parts.c.part)
    ).all()
    if not mine:
        return None
    return dataclasses.replace(
        event,
        message_id=mine[0].message_id,
        text="".join(p.text or "" for p in mine),
        parts=len(mine),
        incomplete=incomplete or len(mine) < total,
        content={**event.content, "parts": [{"part": p.part, "message_id": p.message_id} for p in mine]},
    )


def requeue_expired(engine: Engine, timeout: float, now: float | None = None) -> int:
    """Put one part event of each timed-out group back in the queue, so it dispatches what arrived."""
    now = time.time() if now is None else now
    with write_transaction(engine) as conn:
        # The groups are locked (one being joined now is skipped) before their parts are put back:
        # read without the lock, a group another worker joined and dispatched meanwhile (its part
        # put back by another sweep) would be read as still open on PostgreSQL, and that part put
        # back once more, to dispatch the joined message a second time. FOR UPDATE reads it afresh.
        open_groups = (
            select(sms_groups.c.group_key)
            .where(sms_groups.c.completed_by.is_(None), sms_groups.c.first_seen <= now - timeout)
            .with_for_update(skip_locked=True)
        )
        latest = (
            select(func.max(sms_parts.c.event_id))
            .where(sms_parts.c.group_key.in_(open_groups))
            .group_by(sms_parts.c.group_key)
        )
        return conn.execute(
            update(events)
            .where(events.c.id.in_(latest), events.c.state == "done")
            .values(state="pending", available_at=now, note="multipart SMS timed out: dispatching the parts that arrived")
        ).rowcount
