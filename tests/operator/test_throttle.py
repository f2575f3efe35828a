"""Guessing is slow: ten wrong operator tokens within a minute, from one address or (a hundred) from all,
and the console login, /api and /metrics answer 429 with Retry-After, the right token included, until
the window passes; webhooks never wait for it."""
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit import samples
from receiver.operator import throttle
from receiver.operator.throttle import Throttle, client_key
from tests.conftest import ADMIN_TOKEN, Vonage, examples
from tests.console_client import csrf_of, login

METRICS_TOKEN = "metrics-token-Wq5Er8Ty2Ui6"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(app):
    tick = Clock()
    app.extensions["throttle"].clock = tick
    return tick


def api(client, token, **environ):
    return client.get("/api/events", headers={"Authorization": f"Bearer {token}"}, environ_base=environ)


def test_fifteen_wrong_logins_meet_a_429_and_so_does_the_right_token(client, clock):
    codes = [login(client, f"wrong-{n}").status_code for n in range(15)]
    assert codes == [401] * 10 + [429] * 5
    refused = login(client)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "try again in" in refused.get_data(as_text=True)
    clock.now += 60
    assert login(client).status_code == 302


def test_fifteen_wrong_api_tokens_meet_a_429_until_the_window_passes(client, clock):
    codes = [api(client, f"wrong-{n}").status_code for n in range(15)]
    assert codes == [401] * 10 + [429] * 5
    refused = api(client, ADMIN_TOKEN)
    assert refused.status_code == 429 and refused.get_json()["error"] == "too_many_attempts"
    clock.now += 30
    assert api(client, ADMIN_TOKEN).headers["Retry-After"] == "30"
    clock.now += 30
    assert api(client, ADMIN_TOKEN).status_code == 200


def test_wrong_metrics_tokens_meet_a_429(make_app):
    app = make_app(METRICS_TOKEN=METRICS_TOKEN)
    client = app.test_client()
    for _ in range(10):
        assert client.get("/metrics", headers={"Authorization": "Bearer guess"}).status_code == 401
    refused = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert refused.status_code == 429 and "Retry-After" in refused.headers


def test_the_doors_share_one_count(client):
    for n in range(5):
        login(client, f"wrong-{n}")
        api(client, f"wrong-{n}")
    assert api(client, ADMIN_TOKEN).status_code == 429


def test_x_forwarded_for_changes_nothing_without_trusted_proxies(client):
    codes = [api(client, "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(12)]
    assert codes[-1] == 429


def test_behind_a_proxy_each_client_has_its_own_count(make_app):
    client = make_app(PROXY_FIX_HOPS=1).test_client()
    for _ in range(10):
        api(client, "wrong", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert api(client, ADMIN_TOKEN, HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 429
    assert api(client, ADMIN_TOKEN, HTTP_X_FORWARDED_FOR="198.51.100.8").status_code == 200


def test_guessing_from_many_addresses_meets_the_overall_limit(make_app):
    client = make_app(PROXY_FIX_HOPS=1).test_client()
    for n in range(throttle.OVERALL):
        api(client, "wrong", HTTP_X_FORWARDED_FOR=f"10.{n // 250}.{n % 250}.1")
    assert api(client, ADMIN_TOKEN, HTTP_X_FORWARDED_FOR="192.0.2.1").status_code == 429


def test_ipv6_clients_count_by_their_64():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1" and client_key("not an address") == "not an address"


def test_the_lockout_is_logged_once_a_window_and_counted(client, clock, caplog):
    before = throttle.THROTTLED.labels("api")._value.get()
    with caplog.at_level(logging.WARNING, logger="receiver.operator"):
        for _ in range(30):
            api(client, "wrong")
    lines = [r.getMessage() for r in caplog.records if "wrong operator tokens" in r.getMessage()]
    assert len(lines) == 1 and "from 127.0.0.1" in lines[0] and "answer 429 for 60 s" in lines[0]
    assert throttle.THROTTLED.labels("api")._value.get() - before == 20


def test_webhooks_never_wait_for_it(client, clock):
    for _ in range(15):
        api(client, "wrong")
    assert Vonage(client).status(samples.message_status("delivered")).status_code == 200


def test_a_missing_token_is_no_guess(client):
    for _ in range(15):
        client.get("/api/events")
    assert api(client, ADMIN_TOKEN).status_code == 200


@settings(max_examples=examples(50))
@given(st.lists(st.ip_addresses().map(str), min_size=1, max_size=300), st.integers(1, 50))
def test_the_limiter_stays_bounded_whatever_the_flood(addresses, cap):
    clock = Clock()
    limiter = Throttle(max_addresses=cap, clock=clock)
    for n, address in enumerate(addresses):
        clock.now += 0.5
        limiter.failed(address, "api")
        assert len(limiter) <= cap
    assert len(limiter) <= min(cap, 120)  # nothing older than a window is kept


def test_a_stale_form_after_a_lockout_is_refused_without_comparing(client, clock):
    form = client.get("/ui/login").get_data(as_text=True)
    for _ in range(10):
        client.post("/ui/login", data={"token": "wrong", "csrf_token": csrf_of(form)})
    refused = client.post("/ui/login", data={"token": ADMIN_TOKEN, "csrf_token": csrf_of(form)},
                          headers={"Accept": "application/json"})
    assert refused.status_code == 429 and refused.get_json()["error"] == "too_many_attempts"
