import base64
import contextlib
import copy
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from receiver.operator.applications import (
    VonageAPIError,
    VonageClient,
    configure_application,
    configure_sms,
    diff_application,
    plan_application_update,
    webhook_urls,
)
from tests.fake_vonage import running_fake_vonage

APP_ID = "78d335fa-323d-0114-9c3d-d6f0d48968cf"
BASE = "https://hooks.acme.example"
PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8test\n-----END PUBLIC KEY-----\n"

# What GET /v2/applications/{id} returns for an app that already uses voice, RTC and an old Messages setup.
SEEDED_APP = {
    "id": APP_ID,
    "name": "acme-messaging-prod",
    "keys": {"public_key": PUBLIC_KEY},
    "privacy": {"improve_ai": False},
    "capabilities": {
        "voice": {
            "webhooks": {
                "answer_url": {
                    "address": "https://voice.acme.example/answer",
                    "http_method": "GET",
                    "connection_timeout": 500,
                    "socket_timeout": 3000,
                },
                "fallback_answer_url": {"address": "", "http_method": "GET"},
                "event_url": {"address": "https://voice.acme.example/event", "http_method": "POST"},
            },
            "signed_callbacks": True,
            "conversations_ttl": 48,
            "region": "eu-west",
        },
        "rtc": {
            "webhooks": {"event_url": {"address": "https://rtc.acme.example/event", "http_method": "POST"}},
            "signed_callbacks": True,
        },
        "messages": {
            "version": "v0.1",
            "authenticate_inbound_media": True,
            "webhooks": {
                "inbound_url": {"address": "https://old.acme.example/inbound", "http_method": "POST"},
                "status_url": {"address": "https://old.acme.example/status", "http_method": "POST"},
            },
        },
        "vbc": {},
    },
    "_links": {"self": {"href": f"/v2/applications/{APP_ID}"}},
}

# Vonage only accepts POST for Messages webhooks.
GET_HOOK = {"messages": {"webhooks": {"inbound_url": {"http_method": "GET"}}}}

NEW_MESSAGES = {
    "version": "v1",
    "authenticate_inbound_media": True,
    "webhooks": {
        "inbound_url": {"address": f"{BASE}/webhooks/inbound-message", "http_method": "POST"},
        "status_url": {"address": f"{BASE}/webhooks/message-status", "http_method": "POST"},
    },
}


@pytest.fixture
def fake():
    with running_fake_vonage({APP_ID: SEEDED_APP}) as fake:
        yield fake


@pytest.fixture
def client(fake):
    return make_client(fake)


def make_client(fake, **overrides):
    options = {"api_base": fake.url, "rest_base": fake.url, "timeout": 5.0, **overrides}
    api_key = options.pop("api_key", fake.api_key)
    api_secret = options.pop("api_secret", fake.api_secret)
    return VonageClient(api_key, api_secret, **options)


def expected_put_body():
    body = copy.deepcopy(SEEDED_APP)
    del body["id"], body["_links"]
    body["capabilities"]["messages"] = copy.deepcopy(NEW_MESSAGES)
    return body


def unused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def answering(status):
    """A stand-in receiver that answers every GET with `status`; yields (base URL, paths it was asked for)."""
    paths = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            paths.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- Applications API: GET, modify, PUT ---------------------------------------------------------------


def test_configure_application_puts_whole_app_with_only_messages_webhooks_changed(fake, client):
    configure_application(client, APP_ID, BASE)

    [put] = fake.requests_to("PUT", "/v2/applications/")
    assert put.path == f"/v2/applications/{APP_ID}"
    assert put.headers["Content-Type"] == "application/json"
    assert put.json() == expected_put_body()


def test_configure_application_keeps_everything_else_on_vonage(fake, client):
    configure_application(client, APP_ID, BASE)

    expected = copy.deepcopy(SEEDED_APP)
    expected["capabilities"]["messages"] = NEW_MESSAGES
    assert client.get_application(APP_ID) == expected


def test_configure_application_reports_a_change(client):
    diff_text, changed = configure_application(client, APP_ID, BASE)

    assert changed is True
    assert f"{BASE}/webhooks/inbound-message" in diff_text


def test_configure_application_sends_basic_auth(fake, client):
    configure_application(client, APP_ID, BASE)

    expected = "Basic " + base64.b64encode(f"{fake.api_key}:{fake.api_secret}".encode()).decode()
    assert [r.headers["Authorization"] for r in fake.requests] == [expected, expected]


def test_dry_run_sends_no_put(fake, client):
    configure_application(client, APP_ID, BASE, dry_run=True)

    assert [r.method for r in fake.requests] == ["GET"]
    assert fake.applications[APP_ID] == SEEDED_APP


def test_dry_run_diff_shows_both_new_urls_and_the_version(client):
    diff_text, changed = configure_application(client, APP_ID, BASE, dry_run=True)

    assert changed is True
    assert f'+          "address": "{BASE}/webhooks/inbound-message",' in diff_text
    assert f'+          "address": "{BASE}/webhooks/message-status",' in diff_text
    assert '-      "version": "v0.1",' in diff_text
    assert '+      "version": "v1",' in diff_text


def test_dry_run_diff_does_not_list_read_only_fields(client):
    diff_text, _ = configure_application(client, APP_ID, BASE, dry_run=True)

    assert "_links" not in diff_text
    assert APP_ID not in diff_text


def test_already_configured_app_is_not_put_again(fake, client):
    configure_application(client, APP_ID, BASE)

    diff_text, changed = configure_application(client, APP_ID, BASE + "/")

    assert (diff_text, changed) == ("", False)
    assert len(fake.requests_to("PUT", "/v2/applications/")) == 1


def test_bad_base_url_fails_before_any_request(fake, client):
    with pytest.raises(ValueError):
        configure_application(client, APP_ID, "hooks.acme.example")

    assert fake.requests == []


@pytest.mark.parametrize("api_key, api_secret", [("", "secret"), ("key", ""), (None, None)])
def test_client_requires_credentials(api_key, api_secret):
    with pytest.raises(ValueError, match="VONAGE_API_KEY"):
        VonageClient(api_key, api_secret)


def test_empty_application_id_is_refused(fake, client):
    with pytest.raises(ValueError, match="application id"):
        configure_application(client, "", BASE)

    assert fake.requests == []


# --- Applications API: errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, status, fragments",
    [
        pytest.param(
            lambda fake: make_client(fake, api_secret="wrong").get_application(APP_ID),
            401,
            ["Vonage rejected the API key/secret (401)", "VONAGE_API_KEY", "VONAGE_API_SECRET"],
            id="wrong-secret",
        ),
        pytest.param(
            lambda fake: make_client(fake, api_key="nobody").put_application(APP_ID, {"name": "x"}),
            401,
            ["Vonage rejected the API key/secret (401)"],
            id="wrong-key-on-put",
        ),
        pytest.param(
            lambda fake: make_client(fake).get_application("no-such-app"),
            404,
            ["No application no-such-app on this account (404)", "--application-id", "VONAGE_APPLICATION_ID"],
            id="unknown-app",
        ),
        pytest.param(
            lambda fake: make_client(fake).put_application("no-such-app", {"name": "x"}),
            404,
            ["No application no-such-app on this account (404)"],
            id="unknown-app-on-put",
        ),
        pytest.param(
            lambda fake: make_client(fake).put_application(APP_ID, {"capabilities": {}}),
            422,
            ["Vonage refused the application update (422)", "validation errors", "name (is required)"],
            id="name-missing",
        ),
        pytest.param(
            lambda fake: make_client(fake).put_application(APP_ID, {"name": "x", "capabilities": GET_HOOK}),
            422,
            ["capabilities.messages.webhooks.inbound_url.http_method (must be one of: POST)"],
            id="messages-webhook-not-post",
        ),
    ],
)
def test_vonage_errors_become_clear_messages(fake, call, status, fragments):
    with pytest.raises(VonageAPIError) as caught:
        call(fake)

    assert caught.value.status == status
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_validation_error_as_400_reads_the_same():
    # Vonage's published spec lists 400 for an invalid application body; treat it like 422.
    with running_fake_vonage({APP_ID: SEEDED_APP}, validation_status=400) as fake:
        with pytest.raises(VonageAPIError) as caught:
            make_client(fake).put_application(APP_ID, {"capabilities": {}})

    assert caught.value.status == 400
    assert "Vonage refused the application update (400)" in str(caught.value)
    assert "name (is required)" in str(caught.value)


@pytest.mark.parametrize(
    "call, path",
    [
        pytest.param(
            lambda client: client.get_application(APP_ID), f"/v2/applications/{APP_ID}", id="application"
        ),
        pytest.param(
            lambda client: client.update_account_settings("", ""), "/account/settings", id="account"
        ),
    ],
)
def test_connection_refused_names_the_url(call, path):
    base = f"http://127.0.0.1:{unused_port()}"
    client = VonageClient("abcd1234", "Sup3r-s3cret", api_base=base, rest_base=base, timeout=2)

    with pytest.raises(VonageAPIError) as caught:
        call(client)

    message = str(caught.value)
    assert caught.value.status is None
    assert f"Could not connect to Vonage at {base}{path}" in message
    assert "Connection refused" in message
    assert "Sup3r-s3cret" not in message


def test_timeout_names_the_url_and_the_limit():
    with running_fake_vonage({APP_ID: SEEDED_APP}, delay=5) as fake:
        client = make_client(fake, timeout=0.2)
        with pytest.raises(VonageAPIError) as caught:
            client.get_application(APP_ID)

    assert caught.value.status is None
    assert f"Vonage did not answer GET {fake.url}/v2/applications/{APP_ID} within 0.2s" in str(caught.value)


# --- Account settings: SMS URLs -----------------------------------------------------------------------


def test_configure_sms_posts_the_spec_spelling_as_a_form(fake, client):
    configure_sms(client, BASE)

    [post] = fake.requests_to("POST", "/account/settings")
    assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert post.form() == {
        "moCallBackUrl": f"{BASE}/webhooks/inbound-sms",
        "drCallBackUrl": f"{BASE}/webhooks/delivery-receipt",
    }


def test_configure_sms_sends_credentials_as_query_parameters(fake, client):
    configure_sms(client, BASE)

    [post] = fake.requests_to("POST", "/account/settings")
    assert post.query == {"api_key": [fake.api_key], "api_secret": [fake.api_secret]}


def test_configure_sms_returns_vonage_settings(client):
    settings = configure_sms(client, BASE)

    assert settings["mo-callback-url"] == f"{BASE}/webhooks/inbound-sms"
    assert settings["dr-callback-url"] == f"{BASE}/webhooks/delivery-receipt"
    assert settings["max-outbound-request"] == 30


def test_configure_sms_dry_run_sends_nothing(fake, client):
    planned = configure_sms(client, BASE, dry_run=True)

    assert planned == {
        "moCallBackUrl": f"{BASE}/webhooks/inbound-sms",
        "drCallBackUrl": f"{BASE}/webhooks/delivery-receipt",
    }
    assert fake.requests == []


def test_update_account_settings_omits_none_and_sends_empty_to_unset(fake, client):
    client.update_account_settings(None, "")

    [post] = fake.requests_to("POST", "/account/settings")
    assert post.form() == {"drCallBackUrl": ""}


def test_account_settings_wrong_secret_is_a_clear_error(fake):
    with pytest.raises(VonageAPIError) as caught:
        configure_sms(make_client(fake, api_secret="wrong"), BASE)

    assert caught.value.status == 401
    assert "check VONAGE_API_KEY and VONAGE_API_SECRET" in str(caught.value)
    assert fake.account["mo-callback-url"] == ""


def test_sms_urls_are_saved_when_the_receiver_answers_the_probe():
    with answering(200) as (receiver, probed), running_fake_vonage(probe=True) as fake:
        configure_sms(make_client(fake), receiver)

    assert sorted(probed) == ["/webhooks/delivery-receipt", "/webhooks/inbound-sms"]
    assert fake.account["mo-callback-url"] == f"{receiver}/webhooks/inbound-sms"


def test_sms_urls_are_refused_when_the_receiver_fails_the_probe():
    with answering(404) as (receiver, _), running_fake_vonage(probe=True) as fake:
        with pytest.raises(VonageAPIError) as caught:
            configure_sms(make_client(fake), receiver)

    message = str(caught.value)
    assert caught.value.status == 400
    assert f"{receiver}/webhooks/inbound-sms answered 404" in message
    assert "answers 200 OK to a GET" in message
    assert fake.account["mo-callback-url"] == ""


# --- Planning: pure functions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    ["https://hooks.acme.example", "https://hooks.acme.example/", " https://hooks.acme.example// "],
)
def test_webhook_urls_normalise_trailing_slashes(base_url):
    assert webhook_urls(base_url) == {
        "inbound_url": "https://hooks.acme.example/webhooks/inbound-message",
        "status_url": "https://hooks.acme.example/webhooks/message-status",
        "moCallBackUrl": "https://hooks.acme.example/webhooks/inbound-sms",
        "drCallBackUrl": "https://hooks.acme.example/webhooks/delivery-receipt",
    }


def test_webhook_urls_keep_a_path_prefix():
    urls = webhook_urls("https://acme.example/vonage/")

    assert urls["inbound_url"] == "https://acme.example/vonage/webhooks/inbound-message"


@pytest.mark.parametrize(
    "base_url",
    [
        "hooks.acme.example",
        "/webhooks",
        "ftp://hooks.acme.example",
        "https://",
        "",
        None,
        "https://hooks.acme.example/?token=1",
        "https://hooks.acme.example/#top",
    ],
)
def test_webhook_urls_reject_bad_base_urls(base_url):
    with pytest.raises(ValueError, match="base URL"):
        webhook_urls(base_url)


def test_plan_does_not_modify_its_input():
    app = copy.deepcopy(SEEDED_APP)

    plan_application_update(app, BASE)

    assert app == SEEDED_APP


def test_plan_creates_the_messages_capability_when_absent():
    app = {"id": APP_ID, "name": "voice-only", "capabilities": {"voice": SEEDED_APP["capabilities"]["voice"]}}

    body = plan_application_update(app, BASE)

    assert body == {
        "name": "voice-only",
        "capabilities": {
            "voice": SEEDED_APP["capabilities"]["voice"],
            "messages": {
                "version": "v1",
                "webhooks": {
                    "inbound_url": {"address": f"{BASE}/webhooks/inbound-message", "http_method": "POST"},
                    "status_url": {"address": f"{BASE}/webhooks/message-status", "http_method": "POST"},
                },
            },
        },
    }


def test_plan_creates_capabilities_when_vonage_returns_null():
    body = plan_application_update({"name": "bare", "capabilities": None}, BASE)

    assert body["capabilities"]["messages"]["version"] == "v1"


@pytest.mark.parametrize(
    "keys, expected",
    [
        pytest.param({"public_key": PUBLIC_KEY}, {"public_key": PUBLIC_KEY}, id="public-key-kept"),
        pytest.param(
            {"public_key": PUBLIC_KEY, "private_key": "PRIVATE"},
            {"public_key": PUBLIC_KEY},
            id="private-key-dropped",
        ),
        pytest.param({}, None, id="empty-keys-dropped"),
        pytest.param(None, None, id="null-keys-dropped"),
    ],
)
def test_plan_sends_back_only_the_public_key(keys, expected):
    body = plan_application_update({"name": "x", "keys": keys}, BASE)

    assert body.get("keys") == expected


def test_plan_keeps_unknown_fields():
    # Settings we do not know about must survive the PUT, which replaces the whole application.
    app = {
        "name": "x",
        "future_setting": {"a": 1},
        "capabilities": {"network_apis": {"redirect_uri": "https://r"}},
    }

    body = plan_application_update(app, BASE)

    assert body["future_setting"] == {"a": 1}
    assert body["capabilities"]["network_apis"] == {"redirect_uri": "https://r"}


def test_plan_rejects_an_unknown_messages_version():
    with pytest.raises(ValueError, match="version"):
        plan_application_update(SEEDED_APP, BASE, version="v2")


def test_diff_application_is_a_unified_diff_of_pretty_json():
    old = {"name": "x", "capabilities": {"messages": {"version": "v0.1"}}}
    new = {"name": "x", "capabilities": {"messages": {"version": "v1"}}}

    diff_text = diff_application(old, new)

    assert diff_text.startswith("--- current\n+++ planned\n")
    assert '-      "version": "v0.1"\n' in diff_text
    assert '+      "version": "v1"\n' in diff_text


def test_diff_application_is_empty_when_nothing_changes():
    assert diff_application(SEEDED_APP, copy.deepcopy(SEEDED_APP)) == ""
