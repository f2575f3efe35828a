"""The operator API under /api: guarded by ADMIN_TOKEN, JSON in the shapes the README documents."""
import json

import pytest

from devkit import samples
from receiver.storage.schema import messages
from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def api(client):
    def get(path, **kw):
        return client.get(path, headers=AUTH, **kw)

    return get


def test_api_is_404_without_a_configured_token(make_app):
    client = make_app(ADMIN_TOKEN=None).test_client()
    assert client.get("/api/events", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", f"Basic {ADMIN_TOKEN}", "Bearer", f"Bearer {ADMIN_TOKEN}x"]
)
def test_api_refuses_a_wrong_token(client, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/events", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_events_list_and_filters(vonage, work, api):
    status = samples.message_status("delivered")
    vonage.status(status)
    vonage.status(status)
    vonage.inbound(samples.inbound_message("whatsapp", "text"))
    work()
    events = api("/api/events").get_json()["events"]
    assert len(events) == 2
    assert set(events[0]) >= {
        "id", "kind", "state", "message_id", "status", "received_at", "deliveries", "attempts", "last_error"
    }
    (delivered,) = api("/api/events", query_string={"kind": "message-status"}).get_json()["events"]
    assert (delivered["status"], delivered["deliveries"], delivered["state"]) == ("delivered", 2, "done")
    assert api("/api/events", query_string={"state": "pending"}).get_json()["events"] == []
    by_id = api("/api/events", query_string={"message_id": status["message_uuid"]}).get_json()["events"]
    assert [e["id"] for e in by_id] == [delivered["id"]]
    assert len(api("/api/events", query_string={"limit": 1}).get_json()["events"]) == 1


def test_bad_limit_is_400(api):
    assert api("/api/events", query_string={"limit": "many"}).status_code == 400


def test_event_detail_shows_the_request(vonage, api):
    vonage.sms("delivery-receipt", samples.delivery_receipt("failed"), via="GET")
    (event,) = api("/api/events").get_json()["events"]
    detail = api(f"/api/events/{event['id']}").get_json()
    assert "status=failed" in detail["query"] and detail["headers"]["api-key"] == "a1b2c3d4"


def test_message_shows_status_and_history(vonage, work, api):
    submitted = samples.message_status("submitted", "whatsapp")
    vonage.status(submitted)
    vonage.status(dict(submitted, status="read"))
    work()
    message = api(f"/api/messages/{submitted['message_uuid']}").get_json()
    assert (message["status"], message["direction"], message["channel"]) == ("read", "outbound", "whatsapp")
    assert [h["status"] for h in message["history"]] == ["submitted", "read"]
    assert all(h["timestamp"] for h in message["history"])


def test_inbound_message_carries_text_and_media(vonage, work, api):
    text = samples.inbound_message("sms", "text")
    image = samples.inbound_message("mms", "image")
    vonage.inbound(text)
    vonage.inbound(image)
    work()
    assert api(f"/api/messages/{text['message_uuid']}").get_json()["text"] == text["text"]
    assert api(f"/api/messages/{image['message_uuid']}").get_json()["content"]["image"]["url"] == image["image"]["url"]
    inbound = api("/api/messages", query_string={"direction": "inbound"}).get_json()["messages"]
    assert {m["message_id"] for m in inbound} == {text["message_uuid"], image["message_uuid"]}
    assert api("/api/messages", query_string={"direction": "outbound"}).get_json()["messages"] == []


def test_unknown_message_is_404(api):
    assert api("/api/messages/nope").status_code == 404


def test_replay_puts_the_event_back(vonage, work, client, api):
    vonage.status(samples.message_status("delivered"))
    work()
    (event,) = api("/api/events").get_json()["events"]
    response = client.post(f"/api/events/{event['id']}/replay", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["state"] == "pending"
    assert work() == 1
    # a pending event cannot be replayed, an unknown one is 404
    vonage.status(samples.message_status("read", "whatsapp"))
    pending = api("/api/events", query_string={"state": "pending"}).get_json()["events"][0]
    assert client.post(f"/api/events/{pending['id']}/replay", headers=AUTH).status_code == 409
    assert client.post("/api/events/999/replay", headers=AUTH).status_code == 404


def test_api_answers_valid_json_even_for_stored_nan(client, storage):
    with storage.engine.begin() as conn:  # a message row written before strict parsing existed
        conn.execute(messages.insert().values(
            message_id="m1", direction="inbound", status="received", status_rank=1, incomplete=False,
            content='{"location": {"lat": NaN, "long": Infinity}}', created_at=1.0, updated_at=1.0))
    response = client.get("/api/messages/m1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
    decoded = json.loads(response.data, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert decoded["content"] == {"location": {"lat": None, "long": None}}


@pytest.mark.parametrize("path", ["/api/events/9223372036854775808", "/api/events/99999999999999999999999/replay"])
def test_an_event_id_past_64_bits_is_404(client, path):
    method = client.post if path.endswith("replay") else client.get
    response = method(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
