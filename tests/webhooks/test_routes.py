"""The request path: every kind and shape is verified, stored once and acknowledged; bad input gets a clear 4xx."""
import json
import sqlite3
import time

import pytest
import sqlalchemy
from sqlalchemy import select, update

from devkit import samples
from receiver.storage import get_storage
from receiver.storage.schema import events
from tests.conftest import PATHS, compact


def stored(engine):
    with engine.connect() as conn:
        return conn.execute(select(events).order_by(events.c.id)).all()


MESSAGES_SAMPLES = [
    ("message-status", samples.message_status(status, channel, version))
    for version in ("v1", "v0.1")
    for channel in samples.CHANNELS
    for status in samples.STATUSES
    if not (status == "read" and channel in ("sms", "mms"))
] + [
    ("inbound-message", samples.inbound_message(channel, message_type, version))
    for version in ("v1", "v0.1")
    for channel, types in samples.INBOUND_TYPES.items()
    for message_type in types
]


@pytest.mark.parametrize("kind,payload", MESSAGES_SAMPLES, ids=lambda v: v if isinstance(v, str) else None)
def test_messages_callback_is_stored_then_acknowledged(vonage, engine, kind, payload):
    response = vonage.messages(kind, payload)
    assert response.status_code == 200
    assert response.data == b""
    (row,) = stored(engine)
    assert (row.kind, row.state, row.deliveries) == (kind, "pending", 1)
    assert row.message_id == payload["message_uuid"]
    assert row.body == compact(payload)
    assert row.status == payload.get("status")


@pytest.mark.parametrize("via", ["GET", "form", "json"])
@pytest.mark.parametrize(
    "kind,payload",
    [("inbound-sms", samples.inbound_sms()), ("delivery-receipt", samples.delivery_receipt("delivered"))]
    + [("delivery-receipt", samples.delivery_receipt(s)) for s in ("failed", "expired", "accepted")],
)
def test_sms_api_callback_is_stored_from_every_transport(vonage, engine, kind, payload, via):
    assert vonage.sms(kind, payload, via=via).status_code == 200
    (row,) = stored(engine)
    assert row.kind == kind and row.message_id == payload["messageId"]
    assert (row.query != "") == (via == "GET")


@pytest.mark.parametrize("path", [PATHS["inbound-sms"], PATHS["delivery-receipt"]])
def test_bare_get_probe_answers_200_and_stores_nothing(client, engine, path):
    assert client.get(path).status_code == 200
    assert stored(engine) == []


def test_repeat_delivery_is_counted_not_stored_twice(vonage, engine):
    payload = samples.message_status("delivered", "whatsapp")
    for _ in range(3):
        assert vonage.status(payload).status_code == 200
    (row,) = stored(engine)
    assert row.deliveries == 3


def test_a_line_per_callback_only_at_debug(vonage, caplog):
    import logging

    payload = samples.message_status("delivered", "whatsapp")
    with caplog.at_level(logging.INFO, logger="receiver.webhooks"):
        assert vonage.status(payload).status_code == 200
    assert not [r for r in caplog.records if r.name == "receiver.webhooks"]
    with caplog.at_level(logging.DEBUG, logger="receiver.webhooks"):
        assert vonage.status(dict(payload, status="read")).status_code == 200
    (line,) = [r for r in caplog.records if r.name == "receiver.webhooks"]
    assert (line.kind, line.outcome, line.message_id, line.status) == ("message-status", "stored",
                                                                       payload["message_uuid"], "read")


def test_same_message_with_another_status_is_a_new_event(vonage, engine):
    first = samples.message_status("submitted")
    vonage.status(first)
    vonage.status(dict(first, status="delivered"))
    assert [r.status for r in stored(engine)] == ["submitted", "delivered"]


def test_multipart_sms_parts_are_distinct_events(vonage, engine):
    for part in samples.inbound_sms_parts("one two three", 3):
        vonage.sms("inbound-sms", part, via="form")
    assert len(stored(engine)) == 3


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2, 3]", b'"just a string"', b'{"no": "message id"}', "\u00e9t\u00e9".encode("latin-1")],
)
def test_authentic_but_unreadable_body_is_still_stored(vonage, engine, body):
    assert vonage.status(None, body=body).status_code == 200
    (row,) = stored(engine)
    assert row.body == body and row.dedup_key.startswith("sha256:")


def test_a_surrogate_in_any_id_is_answered_200_over_http(vonage, storage):
    body = compact(samples.message_status("delivered")).replace(b'"message_uuid":"', b'"message_uuid":"\\ud800', 1)
    assert vonage.status(None, body=body).status_code == 200
    assert vonage.status(None, body=body).status_code == 200  # a repeat is still a repeat
    (stored,) = storage.reads.events()
    assert stored["deliveries"] == 2 and stored["message_id"] is None


def test_empty_messages_body_is_a_clear_400(vonage, engine):
    response = vonage.status(None, body=b"")
    assert response.status_code == 400
    assert response.get_json()["error"] == "empty_body"
    assert stored(engine) == []


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_wrong_method_is_a_json_405(client, method):
    response = getattr(client, method)(PATHS["message-status"])
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_unknown_path_is_a_json_404(client):
    assert client.post("/webhooks/nope").get_json()["error"] == "not_found"


def test_body_over_the_limit_is_413(make_app):
    app = make_app(MAX_CONTENT_LENGTH=1000)
    response = app.test_client().post(PATHS["message-status"], data=b"x" * 2000, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"


def test_a_chunked_body_over_the_limit_is_413_not_a_forgery(make_app):
    import io

    app = make_app(MAX_CONTENT_LENGTH=1000)
    body = compact(samples.inbound_message("whatsapp", "text", text="x" * 2000))
    response = app.test_client().post("/webhooks/inbound-message", input_stream=io.BytesIO(body),
                                      headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                                      environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert get_storage(app).reads.rejections() == []


def test_a_forged_sms_callback_too_large_to_be_one_is_refused_before_it_is_read(client):
    """Reading an SMS API callback comes before its signature can be checked: one far larger than Vonage
    sends (a megabyte of parameters costs a thread a quarter of a second) is refused unread."""
    many = "&".join(f"p{n}=v" for n in range(150))
    assert client.post("/webhooks/inbound-sms", data=many,
                       content_type="application/x-www-form-urlencoded").status_code == 413
    assert client.get(f"/webhooks/inbound-sms?{many}").status_code == 413
    large = b"text=" + b"a" * 20_000
    assert client.post("/webhooks/inbound-sms", data=large,
                       content_type="application/x-www-form-urlencoded").status_code == 413
    members = json.dumps({f"p{n}": "v" for n in range(150)})
    assert client.post("/webhooks/inbound-sms", data=members, content_type="application/json").status_code == 413


def test_database_refusing_writes_answers_503_never_200(app, vonage, engine, tmp_path):
    locker = sqlite3.connect(tmp_path / "receiver.sqlite3")
    locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock past our timeout
    try:
        response = vonage.status(samples.message_status("delivered"))
    finally:
        locker.rollback()
        locker.close()
    assert response.status_code == 503
    assert response.get_json()["error"] == "storage_unavailable"
    assert stored(engine) == []


def test_healthz_and_readyz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_readyz_is_503_when_the_database_is_unreachable(app, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    storage = app.extensions["storage"]
    storage.engine.dispose()
    storage.engine = storage.stats.engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'a-file' / 'db.sqlite3'}")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"


def test_readyz_says_when_this_processes_worker_thread_is_not_running(make_app):
    app = make_app(WORKER_IN_WEB=True)
    client = app.test_client()
    assert client.get("/readyz").status_code == 200  # the first request starts the thread
    supervisor = app.extensions["supervisor"]
    supervisor.worker.stop()
    supervisor.thread.join(timeout=10)
    app.before_request_funcs[None].clear()  # keep the next request from starting a new thread
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["error"] == "worker_not_running"


def test_readyz_says_when_the_backlog_has_stalled(app, client, vonage, storage):
    vonage.status(samples.message_status("delivered"))
    with storage.engine.begin() as conn:  # due for two minutes, and no worker has finished anything
        conn.execute(update(events).values(available_at=time.time() - 120))
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["error"] == "backlog_stalled"
    storage.inbox.heartbeat("w", 1, time.time())  # a worker that just finished an event: moving again
    assert client.get("/readyz").status_code == 200


def test_a_body_shorter_than_its_content_length_is_a_400_not_a_forgery(app, engine):
    # The serving loop runs the app only on whole requests; another server can hand over a body cut short.
    import io

    from werkzeug.test import EnvironBuilder

    body = json.dumps(samples.message_status("delivered")).encode()
    environ = EnvironBuilder(method="POST", path=PATHS["message-status"], data=body,
                             content_type="application/json").get_environ()
    environ.update(CONTENT_LENGTH=str(len(body) + 50), **{"wsgi.input": io.BytesIO(body)})
    answered = []
    out = b"".join(app.wsgi_app(environ, lambda status, headers, exc=None: answered.append(status)))
    assert answered[0].startswith("400") and b"bad_request" in out
    assert stored(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM rejections")).scalar() == 0
