"""A Vonage-shaped signed request through a real gunicorn process: stored, acknowledged, dispatched."""

import pytest
import requests

from devkit import samples
from receiver.webhooks.signatures import sign_jwt, sign_sms
from tests.conftest import ADMIN_TOKEN, API_KEY, SECRET, compact
from tests.servers import app_env, gunicorn, wait_for

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def server(tmp_path):
    env = app_env(
        f"sqlite:///{tmp_path / 'e2e.sqlite3'}",
        VONAGE_SIGNATURE_SECRET=SECRET,
        VONAGE_SIGNATURE_METHOD="sha512",
        ADMIN_TOKEN=ADMIN_TOKEN,
    )
    with gunicorn(env, log_path=tmp_path / "gunicorn.log") as srv:
        yield srv




def test_signed_callbacks_are_acknowledged_and_processed(server):
    status = samples.message_status("delivered", "whatsapp")
    body = compact(status)
    token = sign_jwt(body, SECRET, api_key=API_KEY)
    response = requests.post(
        server.url + "/webhooks/message-status",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 200 and response.content == b""

    dlr = sign_sms(dict(samples.delivery_receipt("delivered"), **{"api-key": API_KEY}), SECRET, "sha512")
    assert requests.get(server.url + "/webhooks/delivery-receipt", params=dlr, timeout=5).status_code == 200

    def all_done():
        events = requests.get(server.url + "/api/events", headers=AUTH, timeout=5).json()["events"]
        return len(events) == 2 and all(e["state"] == "done" for e in events) and events

    wait_for(all_done)
    message = requests.get(server.url + f"/api/messages/{status['message_uuid']}", headers=AUTH, timeout=5).json()
    assert message["status"] == "delivered"


def test_forged_callback_is_refused_and_never_stored(server):
    body = compact(samples.message_status("delivered"))
    token = sign_jwt(body, "not-the-secret", api_key=API_KEY)
    response = requests.post(
        server.url + "/webhooks/message-status", data=body, headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert response.status_code == 401 and response.json()["error"] == "bad_signature"
    assert requests.get(server.url + "/api/events", headers=AUTH, timeout=5).json()["events"] == []
    # Each process writes its rejections once a second; this request may reach the other one.
    (rejection,) = wait_for(lambda: requests.get(server.url + "/api/rejections", headers=AUTH,
                                                 timeout=5).json()["rejections"], timeout=5)
    assert rejection["reason"] == "bad_signature" and rejection["path"] == "/webhooks/message-status"
    assert rejection["count"] == 1


def test_metrics_add_up_across_gunicorn_workers(server):
    from prometheus_client.parser import text_string_to_metric_families

    for _ in range(20):  # spread over both worker processes
        body = compact(samples.message_status("submitted"))
        token = sign_jwt(body, SECRET, api_key=API_KEY)
        requests.post(server.url + "/webhooks/message-status", data=body,
                      headers={"Authorization": f"Bearer {token}", "Connection": "close"}, timeout=5)
    text = requests.get(server.url + "/metrics", timeout=5).text
    stored = sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "vonage_callbacks_total" and s.labels == {"kind": "message-status", "outcome": "stored"}
    )
    assert stored == 20
