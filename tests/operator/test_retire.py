"""`flask vonage retire`: the 24-hour rule, then the application's Messages webhook URLs cleared
through the Applications API (devkit.simulator playing Vonage)."""
import time

import pytest

from devkit.simulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, running_simulator
from receiver.operator.retire import QUIET_SECONDS, Verdict

APP_ID = "7d2b9c4e-1f3a-4e8b-9c6d-5a4f3e2d1c0b"
HOOKS = {
    "inbound_url": {"address": "https://hooks.example/webhooks/inbound-message", "http_method": "POST"},
    "status_url": {"address": "https://hooks.example/webhooks/message-status", "http_method": "POST"},
}


def application():
    return {"id": APP_ID, "name": "acme-old", "keys": {"public_key": "-----BEGIN PUBLIC KEY-----\nMIIB\n"},
            "capabilities": {"messages": {"version": "v1", "webhooks": HOOKS}, "voice": {"webhooks": {}}},
            "_links": {"self": {"href": f"/v2/applications/{APP_ID}"}}}


@pytest.fixture
def retire_app(make_app):
    return make_app(VONAGE_API_KEY=DEFAULT_API_KEY, VONAGE_API_SECRET=DEFAULT_API_SECRET)


def last_callback(storage, seconds_ago, application_id=APP_ID):
    at = time.time() - seconds_ago
    storage.stats.save_traffic("web-1", [{"minute": int(at // 60), "api_key": "a1b2c3d4", "application_id": application_id,
                                    "outcome": "stored", "count": 3, "last_at": at, "latency": [3] + [0] * 13}])


def retire(app, vonage, *args, answer="y\n"):
    return app.test_cli_runner().invoke(args=["vonage", "retire", "--api-base", vonage.url, *args], input=answer)


def test_refuses_while_callbacks_arrived_in_the_last_24_hours(retire_app, storage):
    last_callback(storage, 3 * 3600)
    with running_simulator({APP_ID: application()}) as vonage:
        result = retire(retire_app, vonage, "--application-id", APP_ID)
        assert vonage.requests == []  # refused before asking Vonage anything
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert f"application {APP_ID}: its last callback arrived at" in line
    assert "(3.0 h ago); safe to retire from" in line and "Traceback" not in result.output


def test_clears_both_messages_urls_and_keeps_everything_else(retire_app, storage):
    last_callback(storage, QUIET_SECONDS + 600)
    last_callback(storage, 60, application_id="another-app")  # another application's traffic does not count
    with running_simulator({APP_ID: application()}) as vonage:
        result = retire(retire_app, vonage, "--application-id", APP_ID)
        (put,) = vonage.requests_to("PUT", f"/v2/applications/{APP_ID}")
        stored = vonage.applications[APP_ID]
    assert result.exit_code == 0, result.output
    assert "Messages webhook URLs cleared (last callback" in result.output
    body = put.json()
    assert {name: hook["address"] for name, hook in body["capabilities"]["messages"]["webhooks"].items()} == {
        "inbound_url": "", "status_url": ""}
    assert body["capabilities"]["messages"]["webhooks"]["status_url"]["http_method"] == "POST"
    assert body["name"] == "acme-old" and body["capabilities"]["voice"] == {"webhooks": {}}
    assert body["keys"] == {"public_key": application()["keys"]["public_key"]} and "id" not in body
    assert stored["capabilities"]["messages"]["webhooks"]["inbound_url"]["address"] == ""


def test_dry_run_prints_the_diff_and_changes_nothing(retire_app):
    with running_simulator({APP_ID: application()}) as vonage:  # no traffic at all: quiet
        result = retire(retire_app, vonage, "--application-id", APP_ID, "--dry-run")
        assert vonage.requests_to("PUT", "/") == []
    assert result.exit_code == 0, result.output
    assert '-          "address": "https://hooks.example/webhooks/inbound-message",' in result.output
    assert '+          "address": "",' in result.output
    assert "dry run: application" in result.output and "no callback in the last 8 days" in result.output


def test_an_application_without_urls_is_left_alone(retire_app):
    quiet = application()
    quiet["capabilities"]["messages"]["webhooks"] = {name: {**hook, "address": ""} for name, hook in HOOKS.items()}
    with running_simulator({APP_ID: quiet}) as vonage:
        result = retire(retire_app, vonage, "--application-id", APP_ID)
        assert vonage.requests_to("PUT", "/") == []
    assert result.exit_code == 0 and "no Messages webhook URLs to clear" in result.output


def test_vonage_errors_and_missing_credentials_are_one_line(retire_app, make_app):
    with running_simulator({}) as vonage:
        unknown = retire(retire_app, vonage, "--application-id", "no-such-app")
        no_credentials = retire(make_app(), vonage, "--application-id", APP_ID)
    assert unknown.exit_code == 1 and "No application no-such-app on this account (404)" in unknown.output
    assert no_credentials.exit_code == 1 and "VONAGE_API_KEY and VONAGE_API_SECRET must be set" in no_credentials.output


@pytest.mark.parametrize("seconds_ago, safe", [(None, True), (QUIET_SECONDS - 1, False), (QUIET_SECONDS, True)])
def test_the_verdict_is_24_quiet_hours(seconds_ago, safe):
    now = 1_800_000_000.0
    verdict = Verdict(None if seconds_ago is None else now - seconds_ago, now)
    assert verdict.safe is safe


def test_asks_before_it_changes_a_live_application(retire_app, storage):
    last_callback(storage, QUIET_SECONDS + 600)
    with running_simulator({APP_ID: application()}) as vonage:
        result = retire(retire_app, vonage, "--application-id", APP_ID, answer="n\n")
        assert vonage.requests_to("PUT", f"/v2/applications/{APP_ID}") == []
        assert retire(retire_app, vonage, "--application-id", APP_ID, "--yes", answer="").exit_code == 0
        assert len(vonage.requests_to("PUT", f"/v2/applications/{APP_ID}")) == 1
    assert result.exit_code == 1 and "Clear the Messages webhook URLs of the live application" in result.output
    assert "hooks.example/webhooks/inbound-message" in result.output  # the diff, shown before the question


def test_a_database_that_has_not_counted_for_24_hours_proves_nothing(retire_app, storage):
    last_callback(storage, 3600, application_id="another-app")  # counting for an hour only
    with running_simulator({APP_ID: application()}) as vonage:
        refused = retire(retire_app, vonage, "--application-id", APP_ID)
        assert vonage.requests_to("PUT", f"/v2/applications/{APP_ID}") == []
        trusted = retire(retire_app, vonage, "--application-id", APP_ID, "--trust-this-database")
    assert refused.exit_code == 1 and "cannot tell whether callbacks are still on their way" in refused.output
    assert trusted.exit_code == 0, trusted.output


def test_uses_vonage_api_base(make_app, storage):
    with running_simulator({APP_ID: application()}) as vonage:
        app = make_app(VONAGE_API_KEY=DEFAULT_API_KEY, VONAGE_API_SECRET=DEFAULT_API_SECRET, VONAGE_API_BASE=vonage.url)
        result = app.test_cli_runner().invoke(args=["vonage", "retire", "--application-id", APP_ID, "--dry-run"])
        assert vonage.requests_to("GET", f"/v2/applications/{APP_ID}")
    assert result.exit_code == 0, result.output
