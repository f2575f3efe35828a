"""Every stored event has a page: whatever bytes, headers, claims and fields were stored (bodies that are
not UTF-8, lone surrogates in JSON, absurd iat), the console's pages and the API answer 200, escaped."""
import json
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from devkit import samples
from receiver.kinds import KINDS
from receiver.storage.schema import events, message_history, messages
from receiver.worker.loop import Worker
from tests.conftest import ADMIN_TOKEN, API_KEY, Vonage, compact, examples
from tests.console_client import login

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STATES = ("pending", "processing", "done", "failed", "dead", "invalid")

# What a stored text column can hold (any Unicode a driver accepts) and what JSON can carry (lone
# surrogates, as \ud800 escapes).
texts = st.text(max_size=40)
json_texts = st.one_of(texts, st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
                                      max_size=3))
numbers = st.one_of(st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                    st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), numbers, json_texts),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(json_texts, inner, max_size=3)), max_leaves=8)
# Reachable by URL: no control characters (a path cannot carry a newline), nothing blank.
message_ids = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(str.strip)
epochs = st.one_of(st.floats(min_value=-1e12, max_value=1e12), st.sampled_from([0.0, -1.0, 1e11, 253402300800.0]))


# Made once: samples draw from `random`, which a strategy must not.
SAMPLES = {"message-status": samples.message_status("delivered"), "inbound-message": samples.inbound_message(),
           "inbound-sms": samples.inbound_sms("Hello"), "delivery-receipt": samples.delivery_receipt("delivered")}


def sample_body(kind):
    return json.loads(json.dumps(SAMPLES[kind]))


@st.composite
def stored_events(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    payload = sample_body(kind)
    for name in draw(st.lists(st.sampled_from(sorted(payload) + ["extra"]), max_size=3)):
        payload[name] = draw(json_values)
    body = draw(st.one_of(
        st.just(json.dumps(payload).encode()),  # ensure_ascii: surrogates as escapes, NaN as NaN
        st.binary(max_size=60),
        st.just(b"\xff\xfe" + compact(sample_body(kind))),
        st.just(json.dumps(draw(json_values)).encode()),
    ))
    headers = draw(st.dictionaries(st.sampled_from(KINDS[kind].transport.claims + ("user-agent", "content-type",
                                                                                     "x-receiver-unverified")),
                                   json_values, max_size=5))
    return {
        "kind": kind, "body": body, "query": draw(texts), "content_type": draw(texts),
        "headers": draw(st.one_of(st.just(json.dumps(headers)), st.just(json.dumps(draw(json_values))), texts)), "message_id": draw(st.one_of(st.none(), message_ids)),
        "status": draw(st.one_of(st.none(), texts)), "channel": draw(st.one_of(st.none(), texts)),
        "api_key": draw(st.one_of(st.none(), st.just(API_KEY), texts)),
        "application_id": draw(st.one_of(st.none(), texts)),
        "received_at": draw(epochs), "last_delivery_at": draw(epochs), "deliveries": draw(st.integers(1, 10 ** 6)),
        "state": draw(st.sampled_from(STATES)), "attempts": draw(st.integers(0, 10 ** 6)),
        "available_at": draw(epochs), "processed_at": draw(st.one_of(st.none(), epochs)),
        "last_error": draw(st.one_of(st.none(), texts, st.just(json.dumps(draw(json_values))))),
        "note": draw(st.one_of(st.none(), texts)),
    }


@st.composite
def stored_messages(draw, message_id):
    return {"message_id": message_id, "direction": draw(st.sampled_from(["inbound", "outbound", "sideways"])),
            "channel": draw(st.one_of(st.none(), texts)), "status": draw(st.one_of(st.none(), texts)),
            "status_rank": draw(st.integers(-5, 50)), "status_timestamp": draw(st.one_of(st.none(), texts)),
            "to_number": draw(st.one_of(st.none(), texts)), "from_number": draw(st.one_of(st.none(), texts)),
            "client_ref": draw(st.one_of(st.none(), texts)), "message_type": draw(st.one_of(st.none(), texts)),
            "text": draw(st.one_of(st.none(), texts)), "content": draw(st.one_of(st.none(), texts)),
            "incomplete": draw(st.booleans()), "created_at": draw(epochs), "updated_at": draw(epochs)}


def pages_of(message_id):
    ui = ["/ui/", "/ui/?q=x", "/ui/feed/rows?after=0", "/ui/events/1", "/ui/problems", "/ui/health"]
    api = ["/api/events", "/api/events/1", "/api/messages", "/api/rejections"]
    if message_id:
        path = quote(message_id, safe="")
        ui.append(f"/ui/messages/{path}")
        api.append(f"/api/messages/{path}")
    return ui, api


@pytest.fixture
def console(app):
    client = app.test_client()
    login(client)
    return client


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=stored_events(), data=st.data())
def test_every_page_of_any_stored_event_answers_200(app, console, engine, event, data):
    with engine.begin() as conn:
        for table in (events, messages, message_history):
            conn.execute(delete(table))
        conn.execute(insert(events).values(id=1, dedup_key="k", **event))
        if event["message_id"]:
            conn.execute(insert(messages).values(data.draw(stored_messages(event["message_id"]))))
            conn.execute(insert(message_history).values(
                message_id=event["message_id"], event_id=1, status=data.draw(texts), applied=data.draw(st.booleans()),
                timestamp=data.draw(st.one_of(st.none(), texts)), recorded_at=data.draw(epochs)))
    ui, api = pages_of(event["message_id"])
    for path in ui:
        response = console.get(path)
        assert response.status_code == 200, path
    for path in api:
        response = console.get(path, headers=AUTH)
        assert response.status_code == 200, path
        response.get_json()  # JSON a client can parse


@pytest.mark.parametrize("message_id", ["/", "//", "a//b/", "x/reply", "/x//reply", "abc/", " ", "%2F", "?q=1#f"])
def test_a_message_id_of_slashes_or_url_syntax_has_its_pages(app, console, engine, message_id):
    now = time.time()
    with engine.begin() as conn:
        conn.execute(insert(messages).values(message_id=message_id, direction="inbound", status="received",
                                             status_rank=1, created_at=now, updated_at=now, text="hi"))
    path = quote(message_id, safe="")
    assert console.get(f"/ui/messages/{path}").status_code == 200
    found = console.get(f"/api/messages/{path}", headers=AUTH)
    assert found.status_code == 200 and found.get_json()["message_id"] == message_id
    with app.test_request_context():
        from flask import url_for
        assert console.get(url_for("console.message", message_id=message_id)).status_code == 200


@pytest.mark.parametrize("body", [
    b'{"message_uuid":"m1","to":"447700900001","from":"14155550100","channel":"sms","status":"delivered",'
    b'"timestamp":"2026-12-01T10:00:00Z","x":"\\ud800"}',
    b'{"message_uuid":"m1","to":"447700900001","from":"14155550100","channel":"sms","status":"delivered",'
    b'"timestamp":"2026-12-01T10:00:00Z","x":"\xff\xfe"}',
])
def test_an_authentic_callback_with_odd_bytes_has_a_page(console, app, body):
    assert Vonage(console).status({}, body=body).status_code == 200
    Worker(app.extensions["storage"], app.config).run_until_idle()
    html = console.get("/ui/events/1")
    assert html.status_code == 200
    assert console.get("/api/events/1", headers=AUTH).status_code == 200


@pytest.mark.parametrize("iat", [-(10 ** 11), 10 ** 15, 1e300, "yesterday"])
def test_absurd_claims_have_a_page(console, engine, iat):
    with engine.begin() as conn:
        conn.execute(insert(events).values(
            id=1, kind="message-status", dedup_key="k", body=compact(samples.message_status("delivered")), query="",
            content_type="application/json", headers=json.dumps({"api_key": API_KEY, "iat": iat, "jti": "j"}),
            received_at=time.time(), last_delivery_at=time.time(), available_at=time.time(), state="done"))
    html = console.get("/ui/events/1").get_data(as_text=True)
    assert "<dt>iat</dt>" in html
