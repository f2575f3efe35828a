"""The webhook endpoints Vonage calls, and the health checks. Read raw bytes, verify, store, acknowledge.

No handler, no schema validation and no network call runs here: the answer must be fast, and
a 200 is only sent once the callback is committed to the database.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from receiver import metrics, supervisor
from receiver.guard import get_guard, record_rejection
from receiver.payloads import SMS_KINDS, DuplicateParameter, json_object, natural_key, sms_params
from receiver.signatures import SignatureError
from receiver.storage import get_storage

log = logging.getLogger("receiver.routes")

bp = Blueprint("webhooks", __name__)

# Request headers worth keeping with a callback (never Authorization: the token is not needed later).
KEPT_HEADERS = ("Content-Type", "User-Agent", "X-Forwarded-For", "X-Request-Id")


def error(status: int, code: str, message: str):
    """The one JSON error shape of this app."""
    return jsonify(error=code, message=message), status


@bp.post("/webhooks/message-status")
def message_status():
    return receive("message-status")


@bp.post("/webhooks/inbound-message")
def inbound_message():
    return receive("inbound-message")


@bp.route("/webhooks/inbound-sms", methods=["GET", "POST"])
def inbound_sms():
    return receive("inbound-sms")


@bp.route("/webhooks/delivery-receipt", methods=["GET", "POST"])
def delivery_receipt():
    return receive("delivery-receipt")


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready when the database answers, this process's worker thread runs (WORKER_IN_WEB), and the
    backlog moves: a receiver that acknowledges but processes nothing holds up the account's queue."""
    storage = get_storage(current_app)
    reason = storage.unreachable_reason()
    if reason is not None:
        return error(503, "database_unavailable", "the database does not answer")
    problem = supervisor.worker_problem(current_app)
    if problem is not None:
        return error(503, "worker_not_running", problem)
    try:
        stats = storage.stats()
    except Exception:  # answered the probe a moment ago: a passing fault
        return error(503, "database_unavailable", "the database does not answer")
    if stats.stalled:
        return error(503, "backlog_stalled", f"{stats.due} events due, the oldest for {stats.oldest_due_seconds:.0f} s, "
                     f"and no worker finished one in that time ({stats.live_workers} alive)")
    return jsonify(status="ready")


def receive(kind: str):
    """Verify, store and acknowledge one callback; log one line and count it, whatever happened."""
    started = time.perf_counter()
    response, outcome, message_id, status = _verify_and_store(kind)
    elapsed = time.perf_counter() - started
    metrics.observe_callback(kind, outcome, elapsed)
    log.info(
        "callback %s %s",
        kind,
        outcome,
        extra={"kind": kind, "message_id": message_id, "status": status, "outcome": outcome,
               "latency_ms": round(elapsed * 1000, 2)},
    )
    return response


def _verify_and_store(kind: str):
    """(response, outcome, message id, status) for one callback."""
    body = request.get_data(cache=False)
    query = request.query_string.decode("latin-1")
    content_type = request.content_type or ""
    guard = get_guard(current_app)
    headers = {h: request.headers[h] for h in KEPT_HEADERS if h in request.headers}

    try:
        if kind in SMS_KINDS:
            if not query and not body.strip():
                return ("", 200), "probe", None, None  # Vonage's URL probe: it saves the URL only after a 200
            try:
                fields = sms_params(query, body, content_type)
            except DuplicateParameter as exc:
                raise SignatureError("duplicate_param", f"parameter {exc} appears more than once") from None
            guard.check_sms(fields)
            headers.update({k: fields[k] for k in ("api-key", "nonce", "timestamp") if k in fields})
        else:
            claims = guard.check_messages(request.headers.get("Authorization"), body)
            headers.update({k: claims[k] for k in ("api_key", "application_id", "jti", "iat") if k in claims})
            if not body.strip():
                return error(400, "empty_body", "a Messages API callback has a JSON body"), "bad_request", None, None
            fields = json_object(body)
    except SignatureError as exc:
        metrics.REJECTIONS.labels(exc.reason).inc()
        record_rejection(current_app, path=request.path, remote_addr=request.remote_addr, error=exc)
        # Vonage documents rare unsigned callbacks, retried signed after a 5xx.
        code = 503 if exc.retryable else 401
        return error(code, exc.reason, str(exc)), "rejected", None, None

    dedup_key, message_id, status = natural_key(kind, fields, body, query)
    try:
        recorded = get_storage(current_app).record(
            kind=kind,
            dedup_key=dedup_key,
            body=body,
            query=query,
            content_type=content_type,
            headers=headers,
            message_id=message_id,
            status=status,
        )
    except SQLAlchemyError as exc:
        # Never 200 what we could not keep: a 5xx makes Vonage retry later.
        log.error("could not store %s callback: %s", kind, exc.__class__.__name__)
        response = error(503, "storage_unavailable", "the callback could not be stored; retry later")
        return response, "unavailable", message_id, status
    if recorded.duplicate:
        return ("", 200), "duplicate", message_id, status
    supervisor.notify(current_app)
    return ("", 200), "stored", message_id, status


def _http_error(exc: HTTPException):
    code = (exc.name or "error").lower().replace(" ", "_")
    return error(exc.code or 400, code, exc.description or exc.name)


def _unexpected(exc: Exception):
    # A bug must not turn into a 500 that Vonage treats like any 5xx anyway: say so explicitly,
    # and let Vonage retry. The traceback goes to the log.
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error(503, "unavailable", "the request could not be handled; retry later")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
