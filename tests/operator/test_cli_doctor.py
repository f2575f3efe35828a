"""`flask vonage doctor`: one line per check with its fix; FAIL, WARN or OK from the database, the settings,
Vonage's view of the application and a signed round trip to the public URL."""
import time

import pytest
from sqlalchemy import update

from devkit import samples
from receiver.storage import events as stored_events
from receiver.storage import get_storage
from receiver.storage.schema import events, workers
from receiver.storage.stats import ALIVE_SECONDS
from receiver.webhooks.guard import record_rejection
from receiver.webhooks.payloads import Callback
from receiver.webhooks.signatures import SignatureError
from tests.fake_vonage import running_fake_vonage
from tests.loopback import cli, serving
from tests.operator.conftest import APP_ID, application
from tests.servers import free_port


def doctor(app, *args):
    result = cli(app, "vonage", "doctor", *args)
    levels = {}
    for line in result.output.splitlines():
        level, _, rest = line.partition("  ")
        if level.strip() in ("OK", "WARN", "FAIL", "SKIP"):
            levels[rest.strip()[:22].strip()] = level.strip()
    return result, levels


def alive(app, seconds_ago=0.0, progress_ago=0.0):
    now = time.time()
    get_storage(app).inbox.heartbeat("worker-1", 0, now - max(seconds_ago, progress_ago), now=now - seconds_ago)


def test_doctor_passes_a_healthy_deployment_end_to_end(vonage_app):
    alive(vonage_app)
    with serving(vonage_app) as url, running_fake_vonage({APP_ID: application(url)}) as fake:
        result, levels = doctor(vonage_app, "--base-url", url, "--api-base", fake.url)
    assert result.exit_code == 0, result.output
    # SQLite in production: a warning that it must be on persistent storage, for one machine.
    assert levels.pop("database file") == "WARN", result.output
    assert set(levels.values()) == {"OK"}, result.output
    assert {"application", "public message-status", "public inbound-message"} <= set(levels)
    assert "answered a signed sample with 200 in" in result.output
    stored = get_storage(vonage_app).reads.events()
    assert sorted(e["kind"] for e in stored) == ["inbound-message", "message-status"]  # the round trip's samples


def test_doctor_without_base_url_skips_the_vonage_side(app):
    alive(app)
    result, levels = doctor(app)
    assert result.exit_code == 0, result.output
    assert levels["Vonage side"] == "SKIP" and "pass --base-url" in result.output


def store_status(app, state=None, received_ago=0.0):
    engine = get_storage(app).engine
    recorded = stored_events.record_event(engine, Callback("message-status", b"{}", "", "", f"k{time.time()}"),
                                  now=time.time() - received_ago)
    if state:
        with engine.begin() as conn:
            conn.execute(update(events).where(events.c.id == recorded.id).values(state=state))


def refuse(app, count, reason="bad_signature"):
    for _ in range(count):
        record_rejection(app, path="/webhooks/message-status", remote_addr="203.0.113.9",
                         error=SignatureError(reason, "test"))


@pytest.mark.parametrize("config, arrange, check, says", [
    ({}, lambda app: None, "worker", f"no heartbeat in the last {ALIVE_SECONDS:g} s"),
    ({}, lambda app: alive(app, seconds_ago=45), "worker", "no heartbeat"),
    ({"WORKER_IN_WEB": True}, lambda app: None, "worker", "WORKER_IN_WEB=on"),
    ({}, lambda app: (alive(app), store_status(app, "dead")), "dead events", "1 dead"),
    ({}, lambda app: (alive(app, progress_ago=300), store_status(app, received_ago=120)), "backlog", "stalled"),
    ({}, lambda app: (alive(app), refuse(app, 5)), "rejections", "VONAGE_SIGNATURE_SECRET is not the secret"),
    ({"SIGNATURE_VERIFICATION": "off"}, alive, "signature secret", "anyone can forge"),
    # Outside development the app refuses to start with these (tests/system/test_first_hour.py).
    ({"VONAGE_SIGNATURE_SECRET": "short-secret", "APP_ENV": "development"}, alive, "signature secret",
     "shorter than 16"),
    ({"VONAGE_SIGNATURE_SECRET": "Yq9vD3kE7pL2sX8wR4tN6bM1cZ5hJ0aF", "APP_ENV": "development"}, alive,
     "signature secret", "example value"),
])
def test_doctor_fails_and_says_why(make_app, config, arrange, check, says):
    app = make_app(**config)
    arrange(app)
    result, levels = doctor(app)
    assert result.exit_code == 1 and levels[check] == "FAIL", result.output
    assert says in result.output and "Fix: " in result.output


@pytest.mark.parametrize("config, arrange, check, says", [
    ({}, lambda app: store_status(app, "invalid"), "dead events", "1 invalid"),
    ({}, lambda app: store_status(app, received_ago=120), "backlog", "the oldest pending has waited 12"),
    ({}, lambda app: refuse(app, 2, "missing_token"), "rejections", "2 refused in 24 h (missing_token 2)"),
    ({"APP_ENV": "development", "VONAGE_SIGNATURE_SECRET": None}, lambda app: None, "signature secret",
     "generated development secret"),
    ({"SIGNATURE_VERIFICATION": "jwt-only"}, lambda app: None, "signature secret", "SMS API callbacks are not"),
])
def test_doctor_warns_without_failing(make_app, config, arrange, check, says):
    app = make_app(**config)
    alive(app)
    arrange(app)
    result, levels = doctor(app)
    assert result.exit_code == 0 and levels[check] == "WARN", result.output
    assert says in result.output


def test_doctor_fails_when_the_application_points_elsewhere(vonage_app):
    alive(vonage_app)
    with serving(vonage_app) as url, running_fake_vonage({APP_ID: application("https://old.example")}) as fake:
        result, levels = doctor(vonage_app, "--base-url", url, "--api-base", fake.url)
    assert result.exit_code == 1 and levels["application"] == "FAIL"
    assert "inbound_url is https://old.example/webhooks/inbound-message" in result.output
    assert f"flask vonage configure --base-url {url}" in result.output
    assert levels["public message-status"] == "OK"


def test_doctor_reports_vonage_api_errors(vonage_app):
    alive(vonage_app)
    with running_fake_vonage({APP_ID: application("https://x.example")}, api_secret="other") as fake:
        result, levels = doctor(vonage_app, "--base-url", "https://x.example", "--api-base", fake.url)
    assert levels["application"] == "FAIL" and "rejected the API key/secret (401)" in result.output


def test_doctor_fails_when_the_public_url_refuses_our_signature(make_app, tmp_path):
    app = make_app()
    alive(app)
    other = make_app(VONAGE_SIGNATURE_SECRET="the-other-deployments-secret", DATABASE_URL=f"sqlite:///{tmp_path}/o.db")
    with serving(other) as url:
        result, levels = doctor(app, "--base-url", url)
    assert result.exit_code == 1
    assert levels["public message-status"] == levels["public inbound-message"] == "FAIL"
    assert "401 bad_signature" in result.output and "another signature secret" in result.output
    assert levels["application"] == "SKIP"


def test_doctor_fails_when_nothing_answers_at_the_public_url(app):
    alive(app)
    result, levels = doctor(app, "--base-url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1 and levels["public message-status"] == "FAIL"
    assert "ConnectionError" in result.output


def test_doctor_warns_of_claims_held_by_a_dead_worker(app, runner, vonage, storage):
    vonage.status(samples.message_status("delivered"))
    storage.inbox.claim("gone:1:1", lease_seconds=300, limit=1)
    with storage.engine.begin() as conn:
        conn.execute(update(workers).values(seen_at=time.time() - 60))
    storage.inbox.heartbeat("alive", 0, time.time())
    result = runner.invoke(args=["vonage", "doctor"])
    line = next(line for line in result.output.splitlines() if "backlog" in line)
    assert line.startswith("WARN") and "held by a worker that is gone" in line


def test_doctor_applies_the_token_rules(make_app):
    app = make_app(APP_ENV="development", ADMIN_TOKEN="short", METRICS_TOKEN="also-short")
    alive(app)
    result, levels = doctor(app)
    assert levels["operator tokens"] == "WARN"
    assert "ADMIN_TOKEN is shorter than 24 characters (and 1 more)  Fix: generate one" in result.output


def test_doctor_fails_when_queued_messages_have_no_way_out(app):
    from receiver.sending.bodies import build_message

    alive(app)
    assert doctor(app)[1]["sending"] == "OK"
    get_storage(app).outbox.queue(build_message("sms", to="447700900777", from_="447700900123", text="hi"))
    result, levels = doctor(app)
    assert levels["sending"] == "FAIL" and "1 message(s) queued that will never be sent" in result.output
    assert "Fix: sending is not configured: set VONAGE_APPLICATION_ID" in result.output
