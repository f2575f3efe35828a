"""The loop guards (receiver.storage.guards) end to end: the shipped auto-reply against an auto-responder, the
per-recipient cap on handlers' messages, and releasing what they hold."""
from __future__ import annotations

import threading
import time

import pytest

import handlers
from receiver import sending
from receiver.worker.loop import Worker
from receiver.worker.supervisor import Supervisor
from tests.sending.test_delivery import AUTH, CUSTOMER, OURS, _live, private_pem  # noqa: F401 (a fixture)

AUTO_REPLY = "Thanks! We will answer within the hour."


@pytest.fixture
def chatty(make_app, database_url, private_pem):  # noqa: F811
    """Our shipped auto-reply against a customer whose phone auto-responds to every message it gets."""
    yield from _live(make_app, database_url, {"VONAGE_PRIVATE_KEY": private_pem, "AUTO_REPLY_TEXT": AUTO_REPLY,
                                              "WORKER_POLL_SECONDS": 0.05},
                     auto_reply_text="I am out of the office until Monday.")


@pytest.fixture
def capped(make_app, database_url, private_pem):  # noqa: F811
    yield from _live(make_app, database_url, {"VONAGE_PRIVATE_KEY": private_pem, "REPLY_MAX_PER_MINUTE": 2})


def run_for(live, seconds: float) -> None:
    """The worker and its sender as the worker process runs them, for a while."""
    worker = Worker(live.storage, live.app.config, name="worker")
    supervisor = Supervisor(worker)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    time.sleep(seconds)
    worker.stop()
    thread.join(30)


def test_an_auto_responder_gets_one_auto_reply(chatty):
    chatty.vonage.reply(text="Where is my order?", from_=CUSTOMER, to=OURS, channel="sms")
    run_for(chatty, 6.0)

    to_them = [m.body["text"] for m in chatty.vonage.sent if m.body["to"] == CUSTOMER]
    assert to_them == [AUTO_REPLY]
    held = chatty.storage.outbox.listed(state="held")
    assert held and all("AUTO_REPLY_INTERVAL_SECONDS" in m["last_error"] for m in held)
    assert len(chatty.storage.reads.events(kind="inbound-message")) >= 2  # the loop was there to break


def test_a_handler_over_the_per_recipient_cap_is_held_and_released_by_the_cli(capped, monkeypatch):
    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "text", lambda event: [
        sending.reply(event, text=f"part {i} of our answer") for i in range(3)])
    capped.vonage.reply(text="Tell me everything", from_=CUSTOMER, to=OURS, channel="sms")
    capped.process()
    capped.send()

    assert [m.body["text"] for m in capped.vonage.sent] == ["part 0 of our answer", "part 1 of our answer"]
    [held] = capped.storage.outbox.listed(state="held")
    assert held["request"]["text"] == "part 2 of our answer" and "REPLY_MAX_PER_MINUTE" in held["last_error"]

    result = capped.app.test_cli_runner().invoke(args=["vonage", "release", str(held["id"])])
    assert result.exit_code == 0, result.output
    capped.send()
    assert [m.body["text"] for m in capped.vonage.sent][-1] == "part 2 of our answer"
    again = capped.app.test_cli_runner().invoke(args=["vonage", "release", str(held["id"])])
    assert again.exit_code == 1 and "only a held message" in again.output


def test_a_held_message_is_released_through_the_api_but_never_to_a_suppressed_number(capped, monkeypatch):
    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "text", lambda event: [
        sending.reply(event, text=f"answer {i}") for i in range(3)])
    capped.vonage.reply(text="hello", from_=CUSTOMER, to=OURS, channel="sms")
    capped.process()
    [held] = capped.storage.outbox.listed(state="held")
    capped.storage.outbox.suppress(CUSTOMER)

    released = capped.client.post(f"/api/outbox/{held['id']}/release", headers=AUTH)
    assert released.status_code == 200 and released.get_json()["state"] == "queued"
    capped.send()
    assert capped.outbox(held["id"])["state"] == "suppressed"
    assert capped.client.post(f"/api/outbox/{held['id']}/release", headers=AUTH).status_code == 409


def test_operator_sends_are_not_capped(capped):
    ids = [capped.queue(to=CUSTOMER, **{"from": OURS}, channel="sms", message_type="text", text=f"n{i}")
           for i in range(4)]
    while capped.send():
        pass
    assert [capped.outbox(i)["state"] for i in ids] == ["sent"] * 4
