"""The request path: every kind and shape is verified, stored once and acknowledged; bad input gets a clear 4xx."""
import sqlite3

import pytest
import sqlalchemy
from sqlalchemy import select

from devkit import samples
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
