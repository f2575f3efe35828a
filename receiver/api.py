"""The operator's read-and-replay API under /api, guarded by ADMIN_TOKEN.

Without ADMIN_TOKEN the whole /api tree answers 404: an inspection API is never open by accident.
"""
from __future__ import annotations

import hmac

from flask import Blueprint, Flask, abort, current_app, jsonify, request

from receiver import inbox, messages
from receiver.db import get_engine
from receiver.guard import recent_rejections
from receiver.routes import error

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def require_admin_token():
    token = current_app.config.get("ADMIN_TOKEN")
    if not token:
        abort(404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return error(401, "unauthorized", "send Authorization: Bearer <ADMIN_TOKEN>")
    return None


def _limit(default: int = 50) -> int:
    try:
        return max(1, min(int(request.args.get("limit", default)), 1000))
    except ValueError:
        abort(400, "limit must be an integer")


@bp.get("/events")
def list_events():
    rows = inbox.list_events(
        get_engine(current_app),
        kind=request.args.get("kind"),
        state=request.args.get("state"),
        message_id=request.args.get("message_id"),
        limit=_limit(),
    )
    return jsonify(events=[inbox.event_summary(r) for r in rows])


@bp.get("/events/<int:event_id>")
def show_event(event_id: int):
    row = inbox.get_event(get_engine(current_app), event_id)
    if row is None:
        return error(404, "not_found", f"no event {event_id}")
    return jsonify(inbox.event_detail(row))


@bp.post("/events/<int:event_id>/replay")
def replay_event(event_id: int):
    engine = get_engine(current_app)
    if inbox.get_event(engine, event_id) is None:
        return error(404, "not_found", f"no event {event_id}")
    if not inbox.replay(engine, event_id):
        return error(409, "not_replayable", "only done, failed, dead or invalid events can be replayed")
    return jsonify(inbox.event_summary(inbox.get_event(engine, event_id)))


@bp.get("/messages")
def list_messages():
    direction = request.args.get("direction")
    if direction not in (None, "inbound", "outbound"):
        return error(400, "bad_direction", "direction is inbound or outbound")
    return jsonify(messages=messages.list_messages(get_engine(current_app), direction=direction, limit=_limit()))


@bp.get("/messages/<path:message_id>")
def show_message(message_id: str):
    found = messages.get_message(get_engine(current_app), message_id)
    if found is None:
        return error(404, "not_found", f"no message {message_id}")
    return jsonify(found)


@bp.get("/rejections")
def list_rejections():
    return jsonify(rejections=recent_rejections(get_engine(current_app), limit=_limit(100)))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
