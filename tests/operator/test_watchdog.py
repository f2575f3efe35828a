"""The watchdog for silence (receiver.storage.outbox.silent) and what it shows: the console's problems page,
/metrics and doctor; and the console's held messages and suppressed numbers, released and lifted there."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from receiver.storage.schema import outbox
from tests.console_client import csrf, login
from tests.sending.test_delivery import AUTH, CUSTOMER, OURS, _live, private_pem  # noqa: F401 (a fixture)


@pytest.fixture
def live(make_app, database_url, private_pem):  # noqa: F811
    # Statuses that never come, flagged 1 s after an SMS was sent.
    yield from _live(make_app, database_url, {"VONAGE_PRIVATE_KEY": private_pem, "SILENT_AFTER_SECONDS_SMS": 1.0,
                                              "METRICS_ENABLED": True})


def sent_sms(live, text: str) -> int:
    message_id = live.queue(to=CUSTOMER, **{"from": OURS}, channel="sms", message_type="text", text=text)
    live.send()
    return message_id


def test_a_message_whose_statuses_never_come_is_flagged_after_its_deadline(live):
    live.vonage.set_fault("silent")
    quiet = sent_sms(live, "never heard of again")
    heard = sent_sms(live, "delivered as usual")
    live.process()
    assert live.storage.outbox.silent({"sms": 1.0})[0] == 0  # within its deadline: not yet

    time.sleep(1.2)
    count, found = live.storage.outbox.silent({"sms": 1.0})
    assert count == 1 and [m["id"] for m in found] == [quiet] and heard != quiet
    assert live.outbox(heard)["status"] == "delivered"

    assert login(live.client).status_code == 302
    page = live.client.get("/ui/problems").get_data(as_text=True)
    assert "1 sent with no final status" in page and "never heard" not in page and f"<td>{quiet}</td>" in page

    metrics = live.client.get("/metrics").get_data(as_text=True)
    assert "vonage_outbox_silent 1.0" in metrics

    doctor = live.app.test_cli_runner().invoke(args=["vonage", "doctor"])
    assert "silent messages" in doctor.output and "1 sent with no final status" in doctor.output


def test_the_console_lists_suppressed_numbers_and_lifts_one(live):
    live.storage.outbox.suppress(CUSTOMER, "texted 'STOP'")
    login(live.client)
    page = live.client.get("/ui/problems").get_data(as_text=True)
    assert CUSTOMER in page and "texted &#39;STOP&#39;" in page

    lifted = live.client.post("/ui/suppressions/lift", data={"number": CUSTOMER, "csrf_token": csrf(live.client)})
    assert lifted.status_code == 302 and live.storage.outbox.suppressed() == []


def test_the_console_shows_a_held_message_and_releases_it(live):
    message_id = sent_sms(live, "first")
    with live.storage.engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.id == message_id)
                     .values(state="held", last_error="held: over REPLY_MAX_PER_MINUTE"))
    login(live.client)
    assert "held: over REPLY_MAX_PER_MINUTE" in live.client.get("/ui/problems").get_data(as_text=True)

    live.client.post(f"/ui/outbox/{message_id}/release", data={"csrf_token": csrf(live.client)})
    assert live.outbox(message_id)["state"] == "queued"
