"""The suppression list: numbers that opted out. Keyed by the number's digits, so one STOP covers every
channel and every way of writing the number (+44 7700 900123, 447700900123); an id with no digits is keyed by
itself, case-folded. Only this module writes the list; storage.guards reads it for every message queued.
"""
from __future__ import annotations

import re
import time

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection, Engine

from receiver.platform.formats import iso, safe_text
from receiver.storage.engines import insert_for, write_transaction
from receiver.storage.schema import suppressions

_NOT_DIGITS = re.compile(r"[^0-9]")


class OptedOut(Exception):
    """The recipient is on the suppression list: the message is not queued (POST /api/outbox answers 409)."""

    def __init__(self, number: str, since: dict):
        super().__init__(f"{number} opted out ({since['reason']}, {since['created_at']}): nothing is sent to it "
                         "until it texts START or an operator lifts it (`flask vonage optout remove`)")
        self.number, self.since = number, since


def recipient_key(number: str) -> str:
    """How the list knows a number: its ASCII digits; an id without any, trimmed and case-folded."""
    digits = _NOT_DIGITS.sub("", number)
    return digits if digits else number.strip().casefold()


def add(conn: Connection, number: str, *, reason: str, source: str, event_id: int | None = None,
        now: float | None = None) -> bool:
    """Put `number` on the list in the caller's transaction; True when it was not on it already."""
    row = {"recipient": recipient_key(number), "number": number[:255], "reason": safe_text(reason, 500),
           "source": source, "event_id": event_id, "created_at": time.time() if now is None else now}
    statement = insert_for(conn)(suppressions).values(row).on_conflict_do_nothing(
        index_elements=[suppressions.c.recipient]).returning(suppressions.c.recipient)
    return conn.execute(statement).first() is not None  # rowcount is not reliable here on every driver


def remove(conn: Connection, number: str) -> bool:
    """Take `number` off the list in the caller's transaction; True when it was on it."""
    return conn.execute(delete(suppressions).where(suppressions.c.recipient == recipient_key(number))).rowcount > 0


def find(conn: Connection, number: str) -> dict | None:
    """Why and since when `number` is on the list; None when it is not."""
    row = conn.execute(select(suppressions).where(suppressions.c.recipient == recipient_key(number))).first()
    return None if row is None else summary(row)


def summary(row) -> dict:
    return {"number": row.number, "recipient": row.recipient, "reason": row.reason, "source": row.source,
            "event_id": row.event_id, "created_at": iso(row.created_at)}


# -- the verbs the operator's tools call, each its own durable transaction --------------------------------------
def listed(engine: Engine, limit: int = 1000) -> list[dict]:
    """Newest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(suppressions).order_by(suppressions.c.created_at.desc()).limit(limit)).all()
    return [summary(row) for row in rows]


def suppress(engine: Engine, number: str, reason: str = "added by an operator") -> bool:
    with write_transaction(engine) as conn:
        return add(conn, number, reason=reason, source="operator")


def lift(engine: Engine, number: str) -> bool:
    with write_transaction(engine) as conn:
        return remove(conn, number)
