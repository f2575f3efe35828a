"""Message state: one row per message with its current status, and every status in its history.

A status only moves forward (submitted < delivered < read; failures are terminal). Reconciling
the same stored event twice changes nothing, so a retried event is safe.
"""
from __future__ import annotations

import json
import time

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.engine import Connection, Engine

from receiver.platform.formats import iso, storable, stored_object
from receiver.storage import multipart
from receiver.storage.engines import execute_prepared, insert_for
from receiver.storage.schema import message_history, messages, sms_parts
from schemas import Event

# Messages API statuses and SMS API DLR statuses on one scale. Anything not listed (a status
# Vonage adds later) ranks 0: recorded in history, never moves a known status.
STATUS_RANK = {
    "received": 1,  # inbound messages
    "submitted": 1,
    "accepted": 1,
    "buffered": 1,
    "delivered": 2,
    "read": 3,
    # Terminal failures outrank everything: once a message failed, nothing moves it back.
    "rejected": 4,
    "undeliverable": 4,
    "expired": 4,
    "failed": 4,
    "unknown": 4,
}


def _limit(column) -> int | None:
    return getattr(column.type, "length", None)


# What each Event field is written to: the column's size is the value's limit (None: Text, no limit).
_LIMITS = {name: _limit(column) for name, column in {
    "message_id": messages.c.message_id,
    "channel": messages.c.channel,
    "status": messages.c.status,
    "to": messages.c.to_number,
    "from_": messages.c.from_number,
    "client_ref": messages.c.client_ref,
    "message_type": messages.c.message_type,
    "text": messages.c.text,
}.items()}


def unfit(event: Event) -> dict[str, list[str]]:
    """Why this event's values cannot be written to the message state: field -> reasons ({} when they can).

    Checked before writing rather than left to the database, so SQLite and PostgreSQL decide the
    same, and a value is never cut to fit: the event stays invalid, its raw bytes kept.
    """
    problems: dict[str, list[str]] = {}
    for name, limit in _LIMITS.items():
        value = getattr(event, name)
        if value is None:
            continue
        if not isinstance(value, str):
            problems[name] = [f"not a string ({type(value).__name__})"]
        elif storable(value, limit or len(value)) is None:
            too_long = limit is not None and len(value) > limit
            problems[name] = [f"longer than {limit} characters" if too_long else "holds NUL or a lone surrogate"]
    code = (event.error or {}).get("code")
    if code is not None and storable(code, _limit(message_history.c.error_code)) is None:
        problems["error"] = ["its code is not storable text of at most 64 characters"]
    parts = multipart.part_info(event) if event.source == "sms-api" else None
    if parts and storable(parts[0], _limit(sms_parts.c.group_key)) is None:
        problems["concat-ref"] = ["the multipart group (msisdn|to|concat-ref) is not storable text of at most 512 characters"]
    try:
        json.dumps(event.content)
    except (TypeError, ValueError, RecursionError) as exc:
        problems["content"] = [f"cannot be written as JSON ({exc.__class__.__name__})"]
    return problems


def _history_for(conn: Connection):
    return (
        insert_for(conn)(message_history)
        .values({name: bindparam(name) for name in (
            "message_id", "event_id", "status", "timestamp", "applied", "error_code", "recorded_at")})
        .on_conflict_do_nothing(index_elements=[message_history.c.message_id, message_history.c.event_id])
    )


def _history_params(event: Event, status: str, applied: bool, now: float) -> dict:
    error_code = (event.error or {}).get("code")
    return {"message_id": event.message_id, "event_id": event.event_id, "status": status,
            "timestamp": iso(event.timestamp), "applied": applied,
            "error_code": None if error_code is None else str(error_code), "recorded_at": now}


def _record_history(conn: Connection, event: Event, status: str, applied: bool, now: float) -> None:
    execute_prepared(conn, "messages.history", lambda: _history_for(conn), _history_params(event, status, applied, now))


def _upsert_status_for(conn: Connection):
    """One statement: a new message row with this status, or this status on the message's row when
    it ranks higher (one conditional upsert: concurrent workers cannot both "win" with an older status)."""
    insert = insert_for(conn)(messages)
    return insert.values(
        message_id=bindparam("message_id"), direction="outbound", channel=bindparam("channel"),
        status=bindparam("status"), status_rank=bindparam("rank"), status_timestamp=bindparam("timestamp"),
        to_number=bindparam("to"), from_number=bindparam("from"), client_ref=bindparam("client_ref"),
        incomplete=False, created_at=bindparam("now"), updated_at=bindparam("now"),
    ).on_conflict_do_update(
        index_elements=[messages.c.message_id],
        set_={"status": insert.excluded.status, "status_rank": insert.excluded.status_rank,
              "status_timestamp": insert.excluded.status_timestamp, "updated_at": insert.excluded.updated_at,
              "client_ref": func.coalesce(insert.excluded.client_ref, messages.c.client_ref)},
        where=or_(messages.c.status_rank < insert.excluded.status_rank, messages.c.status.is_(None)),
    )


def _current_status():
    return select(messages.c.status).where(messages.c.message_id == bindparam("message_id"))


def record_status(conn: Connection, event: Event) -> str | None:
    """Apply a status event to its message, in the caller's transaction; the message's status after it.
    Not `event.status` when the event was superseded (a later status had already been recorded, so the
    message's status did not move)."""
    now = time.time()
    moved = execute_prepared(conn, "messages.upsert_status", lambda: _upsert_status_for(conn), {
        "message_id": event.message_id, "channel": event.channel, "to": event.to, "from": event.from_,
        "client_ref": event.client_ref, "rank": STATUS_RANK.get(event.status, 0), "status": event.status,
        "timestamp": iso(event.timestamp), "now": now,
    }).rowcount == 1
    _record_history(conn, event, event.status, moved, now)
    if moved:
        return event.status
    # A repeat of the current status, or one that a later status already overtook.
    return execute_prepared(conn, "messages.current_status", _current_status,
                            {"message_id": event.message_id}).scalar()


def _upsert_inbound_for(conn: Connection):
    insert = insert_for(conn)(messages)
    received = {"direction": "inbound", "status": "received", "status_rank": STATUS_RANK["received"]}
    changing = ("status_timestamp", "message_type", "text", "content", "incomplete", "updated_at")
    return insert.values(
        message_id=bindparam("message_id"), channel=bindparam("channel"), to_number=bindparam("to"),
        from_number=bindparam("from"), client_ref=bindparam("client_ref"), created_at=bindparam("updated_at"),
        **received, **{name: bindparam(name) for name in changing},
    ).on_conflict_do_update(
        index_elements=[messages.c.message_id],
        set_={**received, **{name: getattr(insert.excluded, name) for name in changing}},
    )


def record_inbound(conn: Connection, event: Event) -> None:
    """Keep an inbound message (text, media, who sent it) as a message row with status 'received',
    in the caller's transaction."""
    record_inbounds(conn, [event])


def record_inbounds(conn: Connection, events: list[Event]) -> None:
    """record_inbound for each of `events`, in order, as two statements run for each (executemany: one
    round trip for them all where the driver pipelines, as psycopg does)."""
    now = time.time()
    execute_prepared(conn, "messages.upsert_inbound", lambda: _upsert_inbound_for(conn), [{
        "message_id": event.message_id, "channel": event.channel, "to": event.to, "from": event.from_,
        "client_ref": event.client_ref, "status_timestamp": iso(event.timestamp), "message_type": event.message_type,
        "text": event.text, "content": json.dumps(event.content) if event.content else None,
        "incomplete": event.incomplete, "updated_at": now} for event in events])
    execute_prepared(conn, "messages.history", lambda: _history_for(conn),
                     [_history_params(event, "received", True, now) for event in events])


def _placeholder_for(conn: Connection):
    """A message row not yet holding a status (status NULL, rank 0), unless the message has one already."""
    return insert_for(conn)(messages).values(
        message_id=bindparam("message_id"), direction="outbound", channel=bindparam("channel"), status=None,
        status_rank=0, to_number=bindparam("to"), from_number=bindparam("from"), incomplete=False,
        created_at=bindparam("now"), updated_at=bindparam("now"),
    ).on_conflict_do_nothing(index_elements=[messages.c.message_id])


def _move_status_for(conn: Connection):
    return messages.update().where(messages.c.message_id == bindparam("mid")).values(
        status=bindparam("status"), status_rank=bindparam("rank"), status_timestamp=bindparam("timestamp"),
        updated_at=bindparam("now"), client_ref=func.coalesce(bindparam("client_ref"), messages.c.client_ref))


def record_statuses(conn: Connection, events: list[Event]) -> list[str | None]:
    """record_status for each of `events` in the order given, in a few statements whatever their number
    (a round trip each costs more than the work on a database across a network). The outcome is the
    one-at-a-time one: each message's row is locked, its status moved forward in Python, written once.
    Every event of a message must be here, in its order: `events` are sorted by message (reconcile)."""
    now = time.time()
    first = {}
    for event in events:
        first.setdefault(event.message_id, event)
    execute_prepared(conn, "messages.placeholder", lambda: _placeholder_for(conn), [
        {"message_id": e.message_id, "channel": e.channel, "to": e.to, "from": e.from_, "now": now}
        for e in first.values()])
    found = conn.execute(select(messages.c.message_id, messages.c.status, messages.c.status_rank)
                         .where(messages.c.message_id.in_(list(first))).order_by(messages.c.message_id)
                         .with_for_update())
    current = {row.message_id: (row.status, row.status_rank) for row in found}
    after, history, moves = [], [], {}
    for event in events:
        status, rank = current[event.message_id]
        new_rank = STATUS_RANK.get(event.status, 0)
        moved = status is None or rank < new_rank
        if moved:
            current[event.message_id] = (event.status, new_rank)
            earlier = moves.get(event.message_id, {}).get("client_ref")
            moves[event.message_id] = {"mid": event.message_id, "status": event.status, "rank": new_rank,
                                       "timestamp": iso(event.timestamp), "now": now,
                                       "client_ref": event.client_ref if event.client_ref is not None else earlier}
        history.append(_history_params(event, event.status, moved, now))
        after.append(current[event.message_id][0])
    if moves:
        execute_prepared(conn, "messages.move_status", lambda: _move_status_for(conn), list(moves.values()))
    execute_prepared(conn, "messages.history", lambda: _history_for(conn), history)
    return after


def _message_json(row) -> dict:
    out = {
        "message_id": row.message_id,
        "direction": row.direction,
        "channel": row.channel,
        "status": row.status,
        "status_timestamp": row.status_timestamp,
        "to": row.to_number,
        "from": row.from_number,
        "client_ref": row.client_ref,
    }
    if row.direction == "inbound":
        out.update(
            message_type=row.message_type,
            text=row.text,
            content=stored_object(row.content),
            incomplete=row.incomplete,
        )
    return out


def get_message(engine: Engine, message_id: str) -> dict | None:
    """The message's current state and full history, oldest first; None when unknown."""
    with engine.connect() as conn:
        row = conn.execute(select(messages).where(messages.c.message_id == message_id)).first()
        if row is None:
            return None
        history = conn.execute(
            select(message_history)
            .where(message_history.c.message_id == message_id)
            .order_by(message_history.c.id)
        ).all()
    out = _message_json(row)
    out["history"] = [
        {
            "status": h.status,
            "timestamp": h.timestamp,
            "applied": h.applied,
            "error_code": h.error_code,
            "event_id": h.event_id,
        }
        for h in history
    ]
    return out


def list_messages(engine: Engine, *, direction: str | None = None, limit: int = 50) -> list[dict]:
    """Newest first (by when each was first seen: an index orders them, on a table of millions)."""
    stmt = select(messages).order_by(messages.c.created_at.desc()).limit(max(1, min(limit, 1000)))
    if direction:
        stmt = stmt.where(messages.c.direction == direction)
    with engine.connect() as conn:
        return [_message_json(r) for r in conn.execute(stmt).all()]
