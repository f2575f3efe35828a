"""The webhook endpoints Vonage calls, and the health checks. Read raw bytes, verify, record, answer.

No handler, no schema validation and no network call runs here: the answer must be fast, and
a 200 is only sent once the callback is committed to the database.
"""
from __future__ import annotations

import logging
import math
import time

from flask import Blueprint, Flask, current_app, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from receiver.kinds import KINDS, Kind
from receiver.operator import metrics
from receiver.storage import StorageUnavailable, get_storage
from receiver.webhooks.guard import get_guard, record_rejection
from receiver.webhooks.payloads import UNVERIFIED, Callback, DuplicateParameter, callback
from receiver.webhooks.signatures import SignatureError
from receiver.worker import supervisor

log = logging.getLogger("receiver.webhooks")

bp = Blueprint("webhooks", __name__)

# An SMS API callback is a few hundred bytes of a dozen parameters; reading one is checked before its
# signature, so a forged one far past these would cost a thread more than it costs its sender.
SMS_MAX_BYTES = 16 * 1024
SMS_MAX_PARAMETERS = 100
# Request headers worth keeping with a callback (never Authorization: the token is not needed later),
# with where WSGI puts them: read from the environ, a header lookup through werkzeug costs ten times more.
KEPT_HEADERS = {"Content-Type": "CONTENT_TYPE", "User-Agent": "HTTP_USER_AGENT",
                "X-Forwarded-For": "HTTP_X_FORWARDED_FOR", "X-Request-Id": "HTTP_X_REQUEST_ID"}


def error(status: int, code: str, message: str):
    """The one JSON error shape of this app."""
    return jsonify(error=code, message=message), status


def _route(kind: Kind):
    def view():
        return receive(kind)
    return view


for _kind in KINDS.values():  # one route a kind, from the table (receiver.kinds)
    bp.add_url_rule(_kind.path, _kind.name.replace("-", "_"), _route(_kind), methods=list(_kind.methods))


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready when the database answers, this process's worker thread runs (WORKER_IN_WEB), and the
    backlog moves: a receiver that acknowledges but processes nothing holds up the account's queue."""
    try:
        stats = get_storage(current_app).stats.shared()
    except Exception:
        return error(503, "database_unavailable", "the database does not answer")
    problem = supervisor.worker_problem(current_app, stats.live_workers)
    if problem is not None:
        return error(503, "worker_not_running", problem)
    if stats.stalled:
        return error(503, "backlog_stalled", f"{stats.due} events due, the oldest for {stats.oldest_due_seconds:.0f} s, "
                     f"and no worker finished one in that time ({stats.live_workers} alive)")
    return jsonify(status="ready")


def receive(kind: Kind):
    """Verify, record, answer: one callback. Logs one line and counts it, whatever happened."""
    started = time.perf_counter()
    found: Callback | None = None
    try:
        found = verified(kind)
        recorded = get_storage(current_app).inbox.record(found)
        outcome = "duplicate" if recorded.duplicate else "stored"
        answer = "", 200
        if not recorded.duplicate:
            supervisor.notify(current_app)
    except Refused as exc:
        outcome, answer = exc.outcome, ("", 200) if exc.code == 200 else error(exc.code, exc.reason, exc.message)
    except StorageUnavailable as exc:
        # Never 200 what we could not keep: a 5xx makes Vonage retry later.
        log.error("could not store %s callback: %s", kind.name, exc)
        outcome, answer = "unavailable", error(503, "storage_unavailable", "the callback could not be stored; retry later")
    elapsed = time.perf_counter() - started
    metrics.observe_callback(kind.name, outcome, elapsed, api_key=found and found.api_key,
                             application_id=found and found.application_id)
    # A line per callback only at LOG_LEVEL=debug: the handler's own line says what each one was, and at
    # INFO this line cost 8% of a web process's CPU (bench/README.md). Refusals are counted and logged a
    # line per reason every few seconds by guard.record_rejection; a callback not stored is an error above.
    if outcome == "rejected" or not log.isEnabledFor(logging.DEBUG):
        return answer
    log.debug("callback %s %s", kind.name, outcome, extra={
        "kind": kind.name, "outcome": outcome, "latency_ms": round(elapsed * 1000, 2),
        "message_id": found and found.message_id, "status": found and found.status})
    return answer


class Refused(Exception):
    """A request that is not stored: `code` and `reason` are the answer, `outcome` what is counted."""

    def __init__(self, code: int, reason: str, message: str, outcome: str):
        super().__init__(message)
        self.code, self.reason, self.message, self.outcome = code, reason, message, outcome


def verified(kind: Kind) -> Callback:
    """The callback this request carries, once its signature has verified.

    :raises Refused: a forgery (401), an unsigned Messages callback (503: Vonage retries it signed),
        an empty Messages body (400), or the SMS API's parameter-less URL probe (200, nothing stored).
    """
    environ = request.environ
    body = _body(environ)
    query = environ.get("QUERY_STRING", "")  # WSGI's str, its bytes as latin-1
    content_type = environ.get("CONTENT_TYPE", "")
    headers = {name: environ[key] for name, key in KEPT_HEADERS.items() if environ.get(key)}
    try:
        return _VERIFIED_BY[kind.transport.signature](kind, body, query, content_type, headers, get_guard(current_app))
    except SignatureError as exc:
        metrics.REJECTIONS.labels(exc.reason).inc()
        record_rejection(current_app, path=request.path, remote_addr=request.remote_addr, error=exc)
        # Vonage documents rare unsigned callbacks, retried signed after a 5xx.
        raise Refused(503 if exc.retryable else 401, exc.reason, str(exc), "rejected") from None


def _by_sig(kind: Kind, body: bytes, query: str, content_type: str, headers: dict, guard) -> Callback:
    """An SMS API callback: its `sig` over the parameters of exactly one source."""
    if not query and not body.strip():  # Vonage saves a URL only after it answered this with 200
        raise Refused(200, "probe", "", "probe")
    if len(body) > SMS_MAX_BYTES or max(query.count("&"), body.count(b"&")) >= SMS_MAX_PARAMETERS:
        raise Refused(413, "request_entity_too_large", f"an SMS API callback has at most {SMS_MAX_PARAMETERS} "
                      f"parameters in {SMS_MAX_BYTES} bytes", "bad_request")
    try:
        fields = kind.transport.read(query, body, content_type)
    except DuplicateParameter as exc:
        raise SignatureError("duplicate_param", f"parameter {str(exc)[:40]!r} appears more than once") from None
    if len(fields) > SMS_MAX_PARAMETERS:
        raise Refused(413, "request_entity_too_large", f"an SMS API callback has at most {SMS_MAX_PARAMETERS} "
                      "parameters", "bad_request")
    if not guard.check_sms(fields):
        headers[UNVERIFIED] = f"SIGNATURE_VERIFICATION={guard.mode}"
    headers.update({k: fields[k] for k in kind.transport.claims if k in fields})
    return callback(kind, fields, body=body, query=query, content_type=content_type, headers=headers)


def _by_jwt(kind: Kind, body: bytes, query: str, content_type: str, headers: dict, guard) -> Callback:
    """A Messages API callback: its bearer token over the body's hash."""
    claims = guard.check_messages(request.headers.get("Authorization"), body)
    kept = {k: claims[k] for k in kind.transport.claims if k in claims}
    if not claims:
        kept[UNVERIFIED] = f"SIGNATURE_VERIFICATION={guard.mode}"
    if not body.strip():
        raise Refused(400, "empty_body", "a Messages API callback has a JSON body", "bad_request")
    return callback(kind, kind.transport.read(query, body, content_type), body=body, query=query,
                    content_type=content_type, headers={**headers, **kept}, api_key=claims.get("api_key"),
                    application_id=claims.get("application_id"))


_VERIFIED_BY = {"sig": _by_sig, "jwt": _by_jwt}


def _body(environ: dict) -> bytes:
    """The raw body, or 413 when it is larger than MAX_CONTENT_LENGTH however it was sent.

    Werkzeug refuses a Content-Length over the limit, but cuts a chunked body at the limit and
    returns the first part: that would be verified, fail its hash, and be counted as a forgery.
    """
    length = environ.get("CONTENT_LENGTH", "")
    if length.isdigit() and len(length) < 19 and environ.get("wsgi.input") is not None:
        if int(length) > current_app.config["MAX_CONTENT_LENGTH"]:
            raise RequestEntityTooLarge()
        body = environ["wsgi.input"].read(int(length)) if int(length) else b""
        if len(body) < int(length):  # the peer went away mid-body (another server than serving.py's)
            raise ClientDisconnected()
        return body
    if length or not environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    body = environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def _http_error(exc: HTTPException):
    code = (exc.name or "error").lower().replace(" ", "_")
    return error(exc.code or 400, code, exc.description or exc.name)


def _unexpected(exc: Exception):
    # A bug must not turn into a 500 that Vonage treats like any 5xx anyway: say so explicitly,
    # and let Vonage retry. The traceback goes to the log.
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error(503, "unavailable", "the request could not be handled; retry later")


class StrictJSON(DefaultJSONProvider):
    """JSON answers are always valid JSON: a NaN or infinite number stored before strict parsing, or
    in a value Vonage adds, is written as null instead of Python's NaN, which no JSON parser accepts."""

    def dumps(self, obj, **kwargs):
        kwargs.setdefault("allow_nan", False)
        try:
            return super().dumps(obj, **kwargs)
        except ValueError:
            return super().dumps(_finite(obj), **kwargs)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def init_app(app: Flask) -> None:
    app.json = StrictJSON(app)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
