"""The outbox: queueing messages, claiming them for the sender, recording each send's outcome, and
joining status callbacks to what was sent (by message_uuid, or by client_ref before the 202 was recorded).
"""
from __future__ import annotations

import json
import math
import time
import uuid

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, Engine

from receiver.platform.formats import iso, safe_text
from receiver.storage import guards, suppressions
from receiver.storage.engines import execute_prepared, insert_for, write_transaction
from receiver.storage.schema import message_history, outbox
from receiver.storage.stats import beat, held_by_the_dead

STATES = ("queued", "sending", "sent", "unknown", "failed", "held", "suppressed")
CLAIM_LEASE_SECONDS = 60.0  # unless the sender says how long its batch can take


def client_ref_for(event_id: int | None, position: int | None) -> str:
    """The client_ref of a message whose sender gave none: unique, and at most 40 characters (Vonage's older limit)."""
    if event_id is not None:
        return f"vr-{event_id}-{position}"
    return f"vr-{uuid.uuid4().hex[:24]}"


def row_values(body: dict, *, event_id=None, position=None, now: float, purpose: str | None = None) -> dict:
    """The outbox row for one validated Messages API body; it gets a client_ref when it has none."""
    purpose = purpose or getattr(body, "purpose", None)  # receiver.sending.Send carries its purpose
    body = dict(body)
    body.setdefault("client_ref", client_ref_for(event_id, position))
    return {
        "event_id": event_id, "position": position, "channel": body["channel"], "to_number": body["to"],
        "from_number": body["from"], "client_ref": body["client_ref"], "request": json.dumps(body),
        "state": "queued", "attempts": 0, "available_at": now, "created_at": now, "updated_at": now,
        "recipient": suppressions.recipient_key(body["to"]), "purpose": purpose,
    }


def enqueue(conn: Connection, rows: list[dict], *, per_minute: int = 0, once_every: list | None = None) -> None:
    """Queue a handler's rows in the caller's transaction, each as the guards admit it (storage.guards): one at
    a time, so each counts those before it. A (event, position) already queued stays as it is."""
    for i, row in enumerate(rows):
        row = guards.admit(conn, row, per_minute=per_minute, once_every=(once_every or [None] * len(rows))[i],
                           now=row["created_at"])
        insert = insert_for(conn)(outbox).values(row)
        conn.execute(insert.on_conflict_do_nothing(index_elements=[outbox.c.event_id, outbox.c.position]))


def used(engine: Engine) -> bool:
    """Whether the outbox holds any message at all (most receivers never send)."""
    with engine.connect() as conn:
        return conn.execute(select(outbox.c.id).limit(1)).first() is not None


def queue_one(engine: Engine, body: dict) -> int:
    """Queue one message from the API or the CLI, durably; its id. The loop guards are for handlers: an
    operator's message is not held.

    :raises receiver.storage.suppressions.OptedOut: the recipient is on the suppression list.
    """
    with write_transaction(engine) as conn:
        since = suppressions.find(conn, body["to"])
        if since is not None:
            raise suppressions.OptedOut(body["to"], since)
        return conn.execute(outbox.insert().values(row_values(body, now=time.time())).returning(outbox.c.id)).scalar()


def release(engine: Engine, message_id: int) -> bool:
    """Send a held message after all: queued now, past the loop guards (never past the suppression list)."""
    now = time.time()
    with write_transaction(engine) as conn:
        return conn.execute(
            update(outbox).where(outbox.c.id == message_id, outbox.c.state == "held")
            .values(state="queued", available_at=now, last_error=None, updated_at=now)
        ).rowcount == 1


def claim(engine: Engine, sender: str, limit: int, wait_unknown: float, now: float | None = None,
          lease_seconds: float = CLAIM_LEASE_SECONDS) -> list:
    """Claim up to `limit` due messages for `sender`, oldest first, in a commit that waits for the disk
    (so a row is durable before its request leaves). First, sends whose sender died or stalled
    mid-request become `unknown`: they may have been accepted, so they wait for a status callback."""
    now = time.time() if now is None else now
    with write_transaction(engine) as conn:
        beat(conn, sender, now)  # the sender is the worker: its claims are never older than its heartbeat
        stalled = outbox.c.lease_until < now
        dead = held_by_the_dead(conn, outbox, "sending", now)
        conn.execute(
            update(outbox)
            .where(outbox.c.state == "sending", stalled if dead is None else or_(stalled, dead))
            .values(state="unknown", available_at=now + wait_unknown, claimed_by=None, lease_until=None,
                    last_error="the sender stopped before Vonage's answer was recorded", updated_at=now)
        )
        guards.suppress_due(conn, now)
        due = select(outbox.c.id).where(
            outbox.c.state.in_(("queued", "unknown")), outbox.c.available_at <= now
        ).order_by(outbox.c.id).limit(limit)
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        rows = conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(due), outbox.c.state.in_(("queued", "unknown")))
            .values(state="sending", attempts=outbox.c.attempts + 1, claimed_by=sender,
                    lease_until=now + lease_seconds, updated_at=now)
            .returning(outbox)
        ).all()
    return sorted(rows, key=lambda row: row.id)


def record(engine: Engine, message_id: int, sender: str, **values) -> bool:
    """Write a send's outcome (state and its columns) if this sender still holds it; durable.

    :raises ValueError: an `available_at` that is no time (inf, NaN): the row would never be due.
    """
    if not math.isfinite(values.get("available_at", 0.0)):
        raise ValueError(f"available_at must be a finite time, got {values['available_at']!r}")
    if "last_error" in values and values["last_error"] is not None:
        values["last_error"] = safe_text(values["last_error"], 2000)
    with write_transaction(engine) as conn:
        return conn.execute(
            update(outbox)
            .where(outbox.c.id == message_id, outbox.c.state == "sending", outbox.c.claimed_by == sender)
            .values(claimed_by=None, lease_until=None, updated_at=time.time(), **values)
        ).rowcount == 1


def attach_status(conn: Connection, message_id: str, client_ref: str | None, status: str, now: float) -> int | None:
    """Join a status callback to the message it is about, in the caller's transaction; its outbox id.
    `status` is the message's status as state.record_status ranked it (a late `submitted` does not
    hide `delivered`).

    By message_uuid; or, before the 202 was recorded (a send whose answer was lost), by client_ref:
    the message is then known to be sent, and is not sent again.
    """
    # Two indexed lookups rather than one OR, which SQLite would answer with a scan; compiled once,
    # as this runs for every status callback (most are for no message of ours).
    found = execute_prepared(conn, "outbox.by_uuid", _by_uuid, {"message_uuid": message_id}).scalar()
    if found is not None:
        execute_prepared(conn, "outbox.status", _set_status, {"id": found, "status": status, "now": now})
        return found
    if not client_ref:
        return None
    found = execute_prepared(conn, "outbox.by_ref", _by_ref, {"client_ref": client_ref}).scalar()
    if found is not None:  # its 202 never came: the message is sent, and is not sent again
        execute_prepared(conn, "outbox.sent_by_status", _sent_by_status,
                         {"id": found, "status": status, "now": now, "message_uuid": message_id})
    return found


def _by_uuid():
    return select(outbox.c.id).where(outbox.c.message_uuid == bindparam("message_uuid")).order_by(
        outbox.c.id.desc()).limit(1)


def _by_ref():
    return select(outbox.c.id).where(
        outbox.c.client_ref == bindparam("client_ref"), outbox.c.message_uuid.is_(None),
        or_(outbox.c.state == "sending", outbox.c.state == "unknown")).order_by(outbox.c.id.desc()).limit(1)


def _set_status():
    return update(outbox).where(outbox.c.id == bindparam("id")).values(
        status=bindparam("status"), updated_at=bindparam("now"))


def _sent_by_status():
    now = bindparam("now")
    return update(outbox).where(outbox.c.id == bindparam("id")).values(
        status=bindparam("status"), updated_at=now, message_uuid=bindparam("message_uuid"), state="sent",
        sent_at=now, claimed_by=None, lease_until=None, last_error=None)


FINAL_STATUSES = ("delivered", "read", "rejected", "undeliverable", "failed")


def silent(engine: Engine, deadlines: dict[str, float], limit: int = 100, now: float | None = None) -> tuple[int, list]:
    """Sent messages with no final status yet, sent longer ago than their channel's deadline: how many, and the
    `limit` oldest (each with `silent_seconds`). Counted at read time: nothing is written for it."""
    now = time.time() if now is None else now
    late = [and_(outbox.c.channel == channel, outbox.c.sent_at < now - seconds) for channel, seconds in deadlines.items()]
    if not late:
        return 0, []
    where = (outbox.c.state == "sent", or_(outbox.c.status.is_(None), outbox.c.status.not_in(FINAL_STATUSES)),
             or_(*late))
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(outbox).where(*where)).scalar() or 0
        rows = conn.execute(select(outbox).where(*where).order_by(outbox.c.sent_at).limit(limit)).all() if limit else []
    return count, [{**summary(row), "silent_seconds": now - row.sent_at} for row in rows]


def get(engine: Engine, message_id: int) -> dict | None:
    """One outbox message with its status history (oldest first); None when unknown."""
    with engine.connect() as conn:
        row = conn.execute(select(outbox).where(outbox.c.id == message_id)).first()
        if row is None:
            return None
        history = conn.execute(
            select(message_history).where(message_history.c.message_id == row.message_uuid)
            .order_by(message_history.c.id)
        ).all() if row.message_uuid else []
    return {**summary(row), "history": [
        {"status": h.status, "timestamp": h.timestamp, "applied": h.applied, "error_code": h.error_code,
         "event_id": h.event_id} for h in history]}


def find(engine: Engine, message_uuid: str) -> dict | None:
    """The outbox message Vonage knows by this message_uuid, if it is one of ours."""
    with engine.connect() as conn:
        row = conn.execute(select(outbox).where(outbox.c.message_uuid == message_uuid)
                           .order_by(outbox.c.id.desc()).limit(1)).first()
    return None if row is None else summary(row)


def listed(engine: Engine, *, state: str | None = None, limit: int = 50) -> list[dict]:
    """Newest first."""
    stmt = select(outbox).order_by(outbox.c.id.desc()).limit(max(1, min(limit, 1000)))
    if state:
        stmt = stmt.where(outbox.c.state == state)
    with engine.connect() as conn:
        return [summary(row) for row in conn.execute(stmt).all()]


def summary(row) -> dict:
    """The public JSON shape of an outbox message."""
    return {
        "id": row.id, "state": row.state, "message_uuid": row.message_uuid, "client_ref": row.client_ref,
        "attempts": row.attempts, "last_error": row.last_error,
        "problem": json.loads(row.problem) if row.problem else None, "request": json.loads(row.request),
        "status": row.status, "event_id": row.event_id, "channel": row.channel, "to": row.to_number,
        "from": row.from_number, "created_at": iso(row.created_at), "sent_at": iso(row.sent_at),
        "next_attempt_at": iso(row.available_at) if row.state in ("queued", "unknown") else None,
    }
