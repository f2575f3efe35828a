"""The sender against a hostile or unlucky Messages API (the simulator's faults): a total deadline per call, side
by side sends, and a Retry-After that is parsed strictly and capped."""
from __future__ import annotations

import json
import math
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.sending.answers import RETRY_AFTER_CEILING, retry_after
from receiver.sending.delivery import Sender, retry_wait
from tests.sending.test_delivery import AUTH, CUSTOMER, OURS, _live, live, private_pem  # noqa: F401 (fixtures)

DEADLINE = 2.0


@pytest.fixture
def live_deadline(make_app, database_url, private_pem):  # noqa: F811
    yield from _live(make_app, database_url, {"VONAGE_PRIVATE_KEY": private_pem, "SEND_TIMEOUT_SECONDS": DEADLINE})


def sms(live, text: str) -> int:
    return live.queue(to=CUSTOMER, **{"from": OURS}, channel="sms", message_type="text", text=text)


def sending_in_the_background(live):
    """The sender's loop in a thread, as the worker process runs it; stop it with the event returned."""
    stop = threading.Event()
    sender = Sender(live.storage, live.app.config, "sender")

    def loop():
        while not stop.is_set():
            if not sender.run_once(stop):
                sender.wait(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return stop, thread, sender


def wait_for(live, message_id: int, states: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = live.outbox(message_id)
        if found["state"] in states:
            return found
        time.sleep(0.05)
    return found


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_message_behind_two_trickling_answers_is_sent_within_the_deadline(live_deadline, phase):
    live = live_deadline
    live.vonage.set_fault("trickle", count=2, seconds=1.0, phase=phase)  # an hour's answer at this pace
    trickling = [sms(live, "first"), sms(live, "second")]
    stop, thread, sender = sending_in_the_background(live)
    try:
        time.sleep(0.3)  # both trickling calls are under way
        queued_at = time.monotonic()
        behind = sms(live, "behind them")
        sender.notify()
        sent = wait_for(live, behind, ("sent",), DEADLINE + 5)
        took = time.monotonic() - queued_at
        ends = [wait_for(live, i, ("unknown",), DEADLINE + 2) for i in trickling]
    finally:
        stop.set()
        thread.join(DEADLINE + 5)
    print(f"\nphase={phase}: the message behind two trickling answers was sent {took:.2f}s after it was queued "
          f"(SEND_TIMEOUT_SECONDS={DEADLINE:g})")
    assert sent["state"] == "sent" and took < DEADLINE + 2
    assert [e["state"] for e in ends] == ["unknown", "unknown"]
    assert all("SEND_TIMEOUT_SECONDS" in e["last_error"] for e in ends)
    assert not thread.is_alive()


def test_a_huge_answer_is_cut_at_its_cap_and_the_send_is_unknown(live_deadline):
    live = live_deadline
    live.vonage.set_fault("huge", seconds=8)  # an 8 MB 202
    message_id = sms(live, "Your order 48213 is ready")
    started = time.monotonic()
    assert live.send() == 1
    found = live.outbox(message_id)
    assert found["state"] == "unknown" and time.monotonic() - started < DEADLINE


def test_a_400_digit_retry_after_leaves_a_finite_next_attempt_within_the_cap(live):  # noqa: F811
    live.vonage.set_fault("throttle", retry_after="9" * 400)
    message_id = sms(live, "Your order 48213 is ready")
    before = time.time()
    assert live.send() == 1

    assert math.isfinite(live.available_at(message_id))
    assert before <= live.available_at(message_id) <= time.time() + 3600  # SEND_MAX_RETRY_AFTER_SECONDS
    response = live.client.get("/api/outbox", headers=AUTH)
    assert response.status_code == 200
    [listed] = [m for m in json.loads(response.data)["messages"] if m["id"] == message_id]
    assert listed["state"] == "queued" and listed["next_attempt_at"].endswith("Z")


def test_retry_after_is_capped_by_its_setting(make_app, database_url, private_pem):  # noqa: F811
    gen = _live(make_app, database_url, {"VONAGE_PRIVATE_KEY": private_pem, "SEND_MAX_RETRY_AFTER_SECONDS": 60})
    live = next(gen)
    try:
        live.vonage.set_fault("throttle", retry_after="86400")
        message_id = sms(live, "Your order 48213 is ready")
        live.send()
        assert live.available_at(message_id) <= time.time() + 60
    finally:
        gen.close()


RETRY_AFTER_TEXT = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=500),  # delta-seconds, of any length
    st.integers(-10**6, 10**12).map(str),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "1.5", "-0", "+5", " 12 ", "٣", "0x10",
                     "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                     "Mon, 01 Jan 0001 00:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 +9999"]),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    st.text(max_size=60),  # anything at all
)


@given(value=RETRY_AFTER_TEXT)
def test_any_retry_after_is_none_or_a_finite_wait_of_at_most_a_day(value):
    seconds = retry_after(value)
    assert seconds is None or (math.isfinite(seconds) and 0.0 <= seconds <= RETRY_AFTER_CEILING)


@given(seconds=st.floats(allow_nan=True, allow_infinity=True), cap=st.floats(0, 86400))
def test_the_wait_a_retry_after_makes_is_within_the_cap(seconds, cap):
    wait = retry_wait(seconds, cap)
    assert math.isfinite(wait) and 0.0 <= wait <= cap


def test_retry_after_reads_delta_seconds_and_http_dates():
    assert retry_after("120") == 120.0
    assert retry_after("9" * 400) == RETRY_AFTER_CEILING
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: now
    assert retry_after("-5") is None and retry_after("nan") is None and retry_after("soon") is None


@pytest.mark.parametrize("name, value", [("SEND_TIMEOUT_SECONDS", float("inf")), ("SEND_TIMEOUT_SECONDS", 0.0),
                                         ("SEND_MAX_RETRY_AFTER_SECONDS", 86401.0),
                                         ("SEND_MAX_RETRY_AFTER_SECONDS", float("nan")), ("SEND_CONCURRENCY", 0)])
def test_a_sending_limit_out_of_bounds_is_a_start_error_naming_it(make_app, name, value):
    from receiver.platform.config import ConfigError

    with pytest.raises(ConfigError, match=name):
        make_app(**{name: value})
