"""`flask vonage configure`: the application's Messages webhooks and the account's SMS API URLs pointed at this
deployment through the simulator playing Vonage, with a dry run that changes nothing."""
import pytest

from tests.fake_vonage import running_fake_vonage
from tests.loopback import cli
from tests.operator.conftest import APP_ID, application


def configure(app, fake, *args):
    return cli(app, "vonage", "configure", "--api-base", fake.url, "--rest-base", fake.url, *args)


def test_configure_dry_run_shows_the_diff_and_changes_nothing(vonage_app):
    with running_fake_vonage({APP_ID: application("https://old.example")}) as fake:
        result = configure(vonage_app, fake, "--base-url", "https://hooks.example", "--dry-run")
    assert result.exit_code == 0, result.output
    changed = [line.split() for line in result.output.splitlines() if line.startswith(("-  ", "+  "))]
    assert ["-", '"address":', '"https://old.example/webhooks/inbound-message",'] in changed
    assert ["+", '"address":', '"https://hooks.example/webhooks/inbound-message",'] in changed
    assert "dry run" in result.output and fake.requests_to("PUT", "/") == []


def test_configure_points_the_application_and_sms_urls_here(vonage_app):
    with running_fake_vonage({APP_ID: application("https://old.example")}) as fake:
        result = configure(vonage_app, fake, "--base-url", "https://hooks.example/", "--sms")
        again = configure(vonage_app, fake, "--base-url", "https://hooks.example")
    assert result.exit_code == 0, result.output
    (put,) = fake.requests_to("PUT", f"/v2/applications/{APP_ID}")
    assert put.json()["capabilities"]["messages"] == application("https://hooks.example")["capabilities"]["messages"]
    assert put.json()["name"] == "acme-messaging-prod"
    (settings,) = fake.requests_to("POST", "/account/settings")
    assert settings.form() == {"moCallBackUrl": "https://hooks.example/webhooks/inbound-sms",
                               "drCallBackUrl": "https://hooks.example/webhooks/delivery-receipt"}
    assert "status_url  https://hooks.example/webhooks/message-status" in result.output
    assert "delivery receipts https://hooks.example/webhooks/delivery-receipt" in result.output
    assert again.exit_code == 0 and "already point at https://hooks.example" in again.output


def test_configure_sms_dry_run_sends_nothing(vonage_app):
    with running_fake_vonage({APP_ID: application("https://hooks.example")}) as fake:
        result = configure(vonage_app, fake, "--base-url", "https://hooks.example", "--sms", "--dry-run")
    assert result.exit_code == 0
    assert "would set moCallBackUrl=https://hooks.example/webhooks/inbound-sms" in result.output
    assert fake.requests_to("POST", "/") == []


@pytest.mark.parametrize("setup, args, message", [
    ({"api_secret": "rotated-secret"}, [], "rejected the API key/secret (401)"),
    ({}, ["--application-id", "no-such-app"], "No application no-such-app on this account (404)"),
    ({"nameless": True}, [], "refused the application update (422): Bad Request"),
    ({}, ["--base-url", "ftp://hooks.example"], "base URL must look like https://host"),
])
def test_configure_errors_are_clear_and_exit_1(vonage_app, setup, args, message):
    seeded = {APP_ID: application("https://old.example", name=None if setup.pop("nameless", False) else "app")}
    with running_fake_vonage(seeded, **setup) as fake:
        result = configure(vonage_app, fake, "--base-url", "https://hooks.example", *args)
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output


def test_configure_needs_credentials_and_an_application(make_app):
    missing = cli(make_app(), "vonage", "configure", "--base-url", "https://hooks.example")
    assert missing.exit_code == 1 and "VONAGE_API_KEY and VONAGE_API_SECRET must be set" in missing.output
    no_app = cli(make_app(VONAGE_API_KEY="k", VONAGE_API_SECRET="s"), "vonage", "configure",
                 "--base-url", "https://hooks.example")
    assert no_app.exit_code == 1 and "pass --application-id or set VONAGE_APPLICATION_ID" in no_app.output
