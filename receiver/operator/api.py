"""The operator's read-and-replay API under /api, guarded by ADMIN_TOKEN.

Without ADMIN_TOKEN the whole /api tree answers 404: an inspection API is never open by accident.
"""
from __future__ import annotations

from flask import Blueprint, Flask, abort, current_app, jsonify, request

from receiver.operator import throttle
from receiver.sending.bodies import InvalidMessage, validate_message
from receiver.sending.delivery import NOT_CONFIGURED
from receiver.storage import OptedOut, get_storage
from receiver.storage.outbox import STATES as OUTBOX_STATES
from receiver.webhooks.guard import bearer_matches
from receiver.webhooks.routes import error
from receiver.worker import supervisor

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def require_admin_token():
    token = current_app.config.get("ADMIN_TOKEN")
    if not token:
        abort(404)
    wait = throttle.wait_for("api")
    if wait is not None:
        return *error(429, "too_many_attempts", throttle.message(wait)), {"Retry-After": str(wait)}
    authorization = request.headers.get("Authorization")
    if not bearer_matches(authorization, token):
        if authorization:
            throttle.wrong_token("api")
        return error(401, "unauthorized", "send Authorization: Bearer <ADMIN_TOKEN>")
    return None


def _limit(default: int = 50) -> int:
    try:
        return max(1, min(int(request.args.get("limit", default)), 1000))
    except ValueError:
        abort(400, "limit must be an integer")


@bp.get("/events")
def list_events():
    found = get_storage(current_app).reads.events(
        kind=request.args.get("kind"),
        state=request.args.get("state"),
        message_id=request.args.get("message_id"),
        limit=_limit(),
    )
    return jsonify(events=found)


# Event ids are 64-bit: a larger number is no event (404), not a value the database must refuse.
EVENT_ID = "<int(max=9223372036854775807):event_id>"


@bp.get(f"/events/{EVENT_ID}")
def show_event(event_id: int):
    found = get_storage(current_app).reads.event(event_id)
    if found is None:
        return error(404, "not_found", f"no event {event_id}")
    return jsonify(found)


@bp.post(f"/events/{EVENT_ID}/replay")
def replay_event(event_id: int):
    storage = get_storage(current_app)
    if storage.reads.event(event_id) is None:
        return error(404, "not_found", f"no event {event_id}")
    if not storage.inbox.replay([event_id]):
        return error(409, "not_replayable", "only done, failed, dead or invalid events can be replayed")
    return jsonify(storage.reads.event(event_id))


@bp.get("/messages")
def list_messages():
    direction = request.args.get("direction")
    if direction not in (None, "inbound", "outbound"):
        return error(400, "bad_direction", "direction is inbound or outbound")
    return jsonify(messages=get_storage(current_app).reads.messages(direction=direction, limit=_limit()))


@bp.get("/messages/<anyid:message_id>", merge_slashes=False, strict_slashes=False)
def show_message(message_id: str):
    storage = get_storage(current_app)
    found, sent = storage.reads.message(message_id), storage.outbox.sent_as(message_id)
    if found is None and sent is None:
        return error(404, "not_found", f"no message {message_id}")
    if sent is not None:  # one of ours: what we sent, with its status history
        found = {**(found or {"message_id": message_id, "direction": "outbound", "history": []}),
                 "outbox_id": sent["id"], "text": sent["request"].get("text"), "request": sent["request"]}
    return jsonify(found)


@bp.post("/outbox")
def queue_message():
    """Queue one message: a Messages API body (to, from, channel, message_type, text, ...)."""
    if not current_app.extensions["sending_configured"]:
        return error(400, "sending_not_configured", NOT_CONFIGURED)
    try:
        body = validate_message(request.get_json(silent=True))
    except InvalidMessage as exc:
        return error(400, "invalid_message", str(exc))
    try:
        message_id = get_storage(current_app).outbox.queue(body)
    except OptedOut as exc:  # refused, not queued: nothing is sent to a number that said STOP
        return error(409, "opted_out", str(exc))
    supervisor.notify(current_app)
    return jsonify(id=message_id, state="queued"), 202


@bp.post("/outbox/<int(max=9223372036854775807):message_id>/release")
def release_message(message_id: int):
    """Send a held message after all (its loop guard passed over; a suppressed recipient still gets nothing)."""
    storage = get_storage(current_app)
    if storage.outbox.get(message_id) is None:
        return error(404, "not_found", f"no outbox message {message_id}")
    if not storage.outbox.release(message_id):
        return error(409, "not_held", "only a held message can be released")
    supervisor.notify(current_app)
    return jsonify(storage.outbox.get(message_id))


@bp.get("/outbox")
def list_outbox():
    state = request.args.get("state")
    if state not in (None, *OUTBOX_STATES):
        return error(400, "bad_state", f"state is one of {', '.join(OUTBOX_STATES)}")
    return jsonify(messages=get_storage(current_app).outbox.listed(state=state, limit=_limit()))


@bp.get("/outbox/<int(max=9223372036854775807):message_id>")
def show_outbox(message_id: int):
    found = get_storage(current_app).outbox.get(message_id)
    if found is None:
        return error(404, "not_found", f"no outbox message {message_id}")
    return jsonify(found)


@bp.get("/rejections")
def list_rejections():
    return jsonify(rejections=get_storage(current_app).reads.rejections(limit=_limit(100)))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
