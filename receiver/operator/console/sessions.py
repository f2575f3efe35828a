"""The console's server-side sessions: the signed cookie carries a random id, the database the record.

A session opens nothing once its record is gone: logging out deletes it, and it expires after
SESSION_HOURS, after SESSION_IDLE_MINUTES without a page asked for, or when ADMIN_TOKEN changes.
Only a hash of the id is stored. Nothing here renders a page.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from flask import Flask

from receiver.storage import get_storage

MARK_LABEL = b"vonage-webhook-receiver console session mark"
# A page seen within this many seconds of the last one is not written again: one write a minute at most.
TOUCH_EVERY_SECONDS = 60.0


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def token_mark(token: str) -> str:
    """Which ADMIN_TOKEN a session was opened with, without storing anything the token can be found from."""
    return hmac.new(token.encode(), MARK_LABEL, hashlib.sha256).hexdigest()


def _limits(app: Flask, now: float) -> dict:
    return {"opened_before": now - app.config["SESSION_HOURS"] * 3600.0,
            "seen_before": now - app.config["SESSION_IDLE_MINUTES"] * 60.0}


def open_session(app: Flask) -> str:
    """Record a new session for the current ADMIN_TOKEN; its id, for the cookie."""
    now, session_id = time.time(), secrets.token_urlsafe(32)
    sessions = get_storage(app).sessions
    sessions.prune(**_limits(app, now))
    sessions.open(_hash(session_id), token_mark(app.config["ADMIN_TOKEN"]), now)
    return session_id


def signed_in_since(app: Flask, session_id: str | None, *, activity: bool = True) -> float | None:
    """When the session with this id was opened, if it still opens the console; else None (and an
    expired record is deleted). `activity`: the operator asked for a page (a poll is not one)."""
    if not session_id or not isinstance(session_id, str):
        return None
    sessions, id_hash, now = get_storage(app).sessions, _hash(session_id), time.time()
    row = sessions.find(id_hash)
    if row is None:
        return None
    limits = _limits(app, now)
    if (not hmac.compare_digest(row.token_mark, token_mark(app.config["ADMIN_TOKEN"]))
            or row.created_at < limits["opened_before"] or row.seen_at < limits["seen_before"]):
        sessions.close(id_hash)
        return None
    if activity and now - row.seen_at >= TOUCH_EVERY_SECONDS:
        sessions.touch(id_hash, now)
    return row.created_at


def close_session(app: Flask, session_id: str | None) -> None:
    if session_id and isinstance(session_id, str):
        get_storage(app).sessions.close(_hash(session_id))
