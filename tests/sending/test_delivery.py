"""Sending through the outbox, against the local Vonage simulator over real HTTP.

The app runs on loopback (a real threaded server), the simulator stands in for Vonage's Messages
API and sends its signed status callbacks back to it. The worker and the sender are driven by the
tests, one step at a time, so every outcome can be looked at.
"""
from __future__ import annotations

import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update
from werkzeug.serving import make_server

import handlers
from devkit.simulator import running_simulator
from receiver import sending
from receiver.sending.bodies import build_message
from receiver.sending.delivery import Sender
from receiver.sending.keys import public_key_pem
from receiver.storage import get_storage
from receiver.storage.schema import outbox
from receiver.worker.loop import Worker
from tests.conftest import ADMIN_TOKEN, API_KEY, SECRET
from tests.servers import free_port

APP_ID = "8d3f0c2e-5b7a-4c1d-9e6f-0a1b2c3d4e5f"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CUSTOMER, OURS = "447700900123", "447700900456"


@pytest.fixture(scope="module")
def private_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class Live:
    """The app on a real port, the simulator pointed at it, and the steps the tests take."""

    def __init__(self, app, simulator):
        self.app, self.vonage = app, simulator
        self.storage = get_storage(app)
        self.client = app.test_client()
        self.storage.inbox.heartbeat("sender", 0)  # the sender's claims belong to a live worker
        self.sender = Sender(self.storage, app.config, "sender", read_timeout=0.5)

    def queue(self, **body) -> int:
        response = self.client.post("/api/outbox", json=body, headers=AUTH)
        assert response.status_code == 202, response.get_json()
        assert response.get_json()["state"] == "queued"
        return response.get_json()["id"]

    def send(self) -> int:
        return self.sender.run_once()

    def process(self) -> int:
        """Let the simulator's callbacks arrive, then run the worker over them."""
        self.vonage.wait_idle(10)
        return Worker(self.storage, self.app.config, name="worker").run_until_idle()

    def outbox(self, message_id: int) -> dict:
        return self.client.get(f"/api/outbox/{message_id}", headers=AUTH).get_json()

    def available_at(self, message_id: int) -> float:
        """When the outbox will try this message next."""
        with self.storage.engine.connect() as conn:
            return conn.execute(select(outbox.c.available_at).where(outbox.c.id == message_id)).scalar_one()

    def make_due(self, message_id: int) -> None:
        with self.storage.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id == message_id).values(available_at=time.time()))


@pytest.fixture
def live(make_app, database_url, private_pem):
    yield from _live(make_app, database_url, {"VONAGE_PRIVATE_KEY": private_pem})


def _live(make_app, database_url, key_settings, **simulator_options):
    port = free_port()
    options = dict(application_id=APP_ID, public_key=public_key_pem(key_settings.get("_pem") or
                                                                    key_settings.get("VONAGE_PRIVATE_KEY")),
                   signature_secret=SECRET, api_key=API_KEY, receiver_url=f"http://127.0.0.1:{port}",
                   callback_delay=0, reject_share=0, duplicate_share=0, out_of_order_share=0, seed=1)
    options.update(simulator_options)
    with running_simulator(**options) as simulator:
        settings = {k: v for k, v in key_settings.items() if not k.startswith("_")}
        app = make_app(DATABASE_URL=database_url, VONAGE_APPLICATION_ID=APP_ID, VONAGE_API_BASE=simulator.url,
                       **settings)
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield Live(app, simulator)
        finally:
            server.shutdown()
            thread.join(timeout=10)


# -- the whole loop -------------------------------------------------------------------------------
def test_a_message_queued_through_the_api_is_sent_once_and_its_statuses_join_it(live):
    message_id = live.queue(to=CUSTOMER, **{"from": OURS}, channel="whatsapp", message_type="text",
                            text="Your table for two is booked for 8 pm")
    assert live.outbox(message_id)["state"] == "queued"
    assert live.send() == 1
    sent = live.outbox(message_id)
    assert sent["state"] == "sent" and sent["message_uuid"] and sent["attempts"] == 1
    assert [m.body["text"] for m in live.vonage.sent] == ["Your table for two is booked for 8 pm"]

    live.process()  # submitted, delivered, read arrive as signed callbacks
    joined = live.outbox(message_id)
    assert joined["status"] == "read"
    assert [h["status"] for h in joined["history"]] == ["submitted", "delivered", "read"]
    message = live.client.get(f"/api/messages/{sent['message_uuid']}", headers=AUTH).get_json()
    assert message["text"] == "Your table for two is booked for 8 pm" and message["outbox_id"] == message_id
    assert message["status"] == "read" and len(message["history"]) == 3
    assert live.send() == 0  # nothing is sent twice


@pytest.fixture
def live_out_of_order(make_app, database_url, private_pem):
    yield from _live(make_app, database_url, {"VONAGE_PRIVATE_KEY": private_pem}, out_of_order_share=1.0)


def test_a_status_that_arrives_late_does_not_hide_the_later_one(live_out_of_order):
    live = live_out_of_order
    message_ids = [live.queue(to=CUSTOMER, **{"from": OURS}, channel=channel, message_type="text", text="hi")
                   for channel in ("whatsapp", "sms", "whatsapp", "sms")]
    assert live.send() == 4
    live.process()  # every message's statuses arrive with two of them swapped
    arrived = [[h["status"] for h in live.outbox(i)["history"]] for i in message_ids]
    assert all(order not in (["submitted", "delivered", "read"], ["submitted", "delivered"]) for order in arrived)
    assert [live.outbox(i)["status"] for i in message_ids] == ["read", "delivered", "read", "delivered"]


BODIES = [
    build_message("sms", to=CUSTOMER, from_="AcmeShop", text="Order 48213 is ready", ttl=600),
    build_message("whatsapp", to=CUSTOMER, from_=OURS, text="Hello"),
    build_message("whatsapp", "image", to=CUSTOMER, from_=OURS, url="https://cdn.example/a.png", caption="a"),
    build_message("whatsapp", "template", to=CUSTOMER, from_=OURS,
                  template={"name": "order_ready", "parameters": ["48213"]},
                  options={"locale": "en_GB", "policy": "deterministic"}),
    build_message("mms", "image", to="12015550123", from_="12015550187", url="https://cdn.example/b.jpg"),
    build_message("viber_service", to=CUSTOMER, from_="16273", text="Viber hello",
                  options={"category": "transaction"}),
    build_message("messenger", to="6398214550918273", from_="104395831203986", text="Messenger hello",
                  options={"category": "response"}),
    build_message("rcs", to=CUSTOMER, from_="acme_rbm_agent", text="RCS hello"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("body", BODIES, ids=lambda b: f"{b['channel']}-{b['message_type']}")
def test_every_channels_message_is_sent_as_built(live, body):
    message_id = live.queue(**body)
    live.send()
    assert live.outbox(message_id)["state"] == "sent"
    (sent,) = live.vonage.sent
    assert {k: v for k, v in sent.body.items() if k != "client_ref"} == body
    assert sent.body["client_ref"].startswith("vr-")


# -- what goes wrong ------------------------------------------------------------------------------
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_429_waits_as_long_as_retry_after_says_then_sends(live):
    message_id = live.queue(**BODIES[0])
    live.vonage.set_fault("throttle", 1, retry_after=7)
    before = time.time()
    live.send()
    waiting = live.outbox(message_id)
    assert waiting["state"] == "queued" and waiting["attempts"] == 1 and "throttl" in waiting["last_error"].lower()
    assert before + 6 <= live.available_at(message_id) <= time.time() + 8
    assert live.send() == 0  # not before its time
    live.make_due(message_id)
    live.send()
    assert live.outbox(message_id)["state"] == "sent" and len(live.vonage.requests_to("POST", "/v1/messages")) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_5xx_is_retried_with_backoff(live):
    message_id = live.queue(**BODIES[0])
    live.vonage.set_fault("server_error", 1, status=503)
    before = time.time()
    live.send()
    retrying = live.outbox(message_id)
    assert retrying["state"] == "queued" and retrying["next_attempt_at"]
    assert live.available_at(message_id) >= before + 4
    live.make_due(message_id)
    live.send()
    assert live.outbox(message_id)["state"] == "sent"


def test_a_fresh_senders_claim_is_not_taken_for_a_dead_ones(make_app, database_url):
    """A sender that has never written a heartbeat before its first claim is alive all the same:
    another worker's claim must not turn its send in flight into `unknown` (sent twice later)."""
    storage = get_storage(make_app(DATABASE_URL=database_url))
    storage.outbox.queue(BODIES[0])
    storage.outbox.queue(BODIES[1])
    (first,) = storage.outbox.claim("fresh:1:1", 1, 300)
    assert [row.id for row in storage.outbox.claim("other:2:2", 5, 300)] == [first.id + 1]
    with storage.engine.connect() as conn:
        assert conn.execute(select(outbox.c.state, outbox.c.claimed_by).where(outbox.c.id == first.id)).one() \
            == ("sending", "fresh:1:1")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_4xx_fails_at_once_and_keeps_vonages_problem(live):
    message_id = live.queue(**BODIES[1])
    live.vonage.set_fault("problem", 1, code="1120")
    live.send()
    failed = live.outbox(message_id)
    assert failed["state"] == "failed" and failed["attempts"] == 1
    assert failed["problem"]["type"].endswith("#1120") and "from" in failed["last_error"]
    live.make_due(message_id)
    assert live.send() == 0 and len(live.vonage.requests_to("POST", "/v1/messages")) == 1


def test_a_send_whose_answer_was_lost_is_not_sent_again_once_its_status_arrives(live):
    message_id = live.queue(**BODIES[1])
    live.vonage.set_fault("slow", 1, seconds=2.0)  # accepted, but the 202 comes after the client gave up
    live.send()
    assert live.outbox(message_id)["state"] == "unknown"
    time.sleep(2.2)
    live.process()  # its status callbacks, carrying its client_ref
    found = live.outbox(message_id)
    assert found["state"] == "sent" and found["message_uuid"] == live.vonage.sent[0].message_uuid
    live.make_due(message_id)
    assert live.send() == 0
    assert len(live.vonage.requests_to("POST", "/v1/messages")) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_unknown_send_with_no_status_by_its_deadline_is_sent_again(live):
    message_id = live.queue(**BODIES[1])
    live.vonage.set_fault("drop", 1)  # the connection is closed: Vonage never took it
    live.send()
    assert live.outbox(message_id)["state"] == "unknown"
    live.make_due(message_id)  # SEND_UNKNOWN_WAIT_SECONDS passed without a status
    live.send()
    assert live.outbox(message_id)["state"] == "sent" and live.outbox(message_id)["attempts"] == 2


# -- from a handler --------------------------------------------------------------------------------
def test_a_replayed_inbound_event_with_a_replying_handler_sends_one_reply(live, monkeypatch):
    runs = []
    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "text",
                        lambda event: (runs.append(event.event_id), sending.reply(event, text="Got it, thanks")))
    live.vonage.reply(text="Is my order ready?", from_=CUSTOMER, to=OURS, channel="whatsapp")
    live.process()
    live.send()
    (event,) = live.storage.reads.events(kind="inbound-message")
    assert live.client.post(f"/api/events/{event['id']}/replay", headers=AUTH).status_code == 200
    live.process()  # the handler runs again, and asks for the same reply again
    live.send()
    replies = [m.body for m in live.vonage.sent]
    assert runs == [event["id"], event["id"]] and len(replies) == 1
    assert replies[0]["to"] == CUSTOMER and replies[0]["from"] == OURS
    assert replies[0]["context"] == {"message_uuid": event["message_id"]}  # WhatsApp quotes what it answers


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_handler_that_raises_after_sending_queues_nothing(live, monkeypatch):
    def sends_then_fails(event):
        sending.reply(event, text="never sent")
        raise RuntimeError("the CRM is down")

    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "text", sends_then_fails)
    live.app.config["RETRY_BASE_SECONDS"] = 60.0
    live.vonage.reply(text="hello", from_=CUSTOMER, to=OURS, channel="sms")
    live.process()
    assert live.storage.outbox.listed() == [] and live.send() == 0
    (event,) = live.storage.reads.events(kind="inbound-message")
    assert event["state"] == "failed" and "the CRM is down" in event["last_error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_status_handler_is_told_which_of_our_messages_it_is_about(live, monkeypatch):
    seen = []
    monkeypatch.setitem(handlers.STATUS_HANDLERS, "delivered", lambda event: seen.append(event.outbox_id))
    message_id = live.queue(**BODIES[1])
    live.send()
    live.process()
    assert seen == [message_id]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_shipped_handler_replies_with_auto_reply_text_given_to_create_app(make_app, database_url, private_pem):
    """AUTO_REPLY_TEXT set through create_app (not the environment) is the one the handler reads."""
    running = _live(make_app, database_url, {"VONAGE_PRIVATE_KEY": private_pem,
                                             "AUTO_REPLY_TEXT": "Thanks! We will answer within the hour."})
    live = next(running)
    try:
        live.vonage.reply(text="hi", from_=CUSTOMER, to=OURS, channel="sms")
        live.process()
        live.send()
        assert [m.body["text"] for m in live.vonage.sent] == ["Thanks! We will answer within the hour."]
    finally:
        running.close()


def test_sending_outside_a_handler_says_where_to_send_from():
    with pytest.raises(sending.NotInHandler, match="flask vonage send"):
        sending.send(channel="sms", to=CUSTOMER, from_=OURS, text="hi")


def test_a_handlers_sends_can_be_tested_without_a_database():
    from devkit import samples
    from schemas import load_event

    event = load_event("inbound-message", samples.inbound_message("viber_service", "text"), event_id=1)
    with sending.collecting() as sent:
        sending.reply(event, text="Thanks")
    assert sent == [{"to": event.from_, "from": event.to, "channel": "viber_service", "message_type": "text",
                     "text": "Thanks", "context": {"message_uuid": event.message_id}}]


# -- settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("form", ["one line with \\n", "a file"])
def test_the_private_key_in_either_setting_form_sends(make_app, database_url, private_pem, tmp_path, form):
    if form == "a file":
        path = tmp_path / "private.key"
        path.write_text(private_pem)
        settings = {"VONAGE_PRIVATE_KEY_PATH": str(path), "_pem": private_pem}
    else:
        settings = {"VONAGE_PRIVATE_KEY": private_pem.replace("\n", "\\n"), "_pem": private_pem}
    for live in _live(make_app, database_url, settings):
        message_id = live.queue(**BODIES[0])
        live.send()
        assert live.outbox(message_id)["state"] == "sent"


def test_without_credentials_the_api_refuses_to_queue_and_says_what_to_set(client):
    response = client.post("/api/outbox", json=BODIES[0], headers=AUTH)
    assert response.status_code == 400
    assert "VONAGE_PRIVATE_KEY" in response.get_json()["message"]


@pytest.mark.parametrize("body, field", [({"to": CUSTOMER, "channel": "sms", "message_type": "text", "text": "hi"}, "from"),
                                          ({**BODIES[0], "channel": "pigeon"}, "channel"), (["not", "an object"], "must be a JSON object")])
def test_a_body_that_cannot_be_sent_is_400_with_the_reason(make_app, private_pem, body, field):
    app = make_app(VONAGE_APPLICATION_ID=APP_ID, VONAGE_PRIVATE_KEY=private_pem)
    response = app.test_client().post("/api/outbox", json=body, headers=AUTH)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_message"
    assert field in response.get_json()["message"]

