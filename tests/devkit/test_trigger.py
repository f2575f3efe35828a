"""flask vonage trigger|configure|doctor and flask events resend, over real HTTP on loopback.

Callbacks go to the app served in a thread (dispatch checked with the worker in this process), to a
small server that only verifies signatures, or to a real gunicorn (slow). Vonage is tests/fake_vonage.py.
"""
import contextlib
import json
import shlex
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import update
from werkzeug.serving import make_server

import handlers
from devkit import samples
from receiver.operator.signed import VIAS
from receiver.storage import events as stored_events
from receiver.storage import get_storage
from receiver.storage.schema import events
from receiver.storage.stats import ALIVE_SECONDS
from receiver.webhooks.guard import record_rejection
from receiver.webhooks.keyring import Keyring
from receiver.webhooks.payloads import Callback, sms_params
from receiver.webhooks.signatures import SignatureError, verify_jwt, verify_sms
from receiver.worker.loop import Worker
from tests.conftest import ADMIN_TOKEN, SECRET, SMS_METHOD, Vonage, count_states
from tests.fake_vonage import DEFAULT_API_KEY, DEFAULT_API_SECRET, running_fake_vonage
from tests.servers import app_env, free_port, gunicorn

APP_ID = "5c1f8e2a-93d4-4b7e-a0c6-2f9d8e1b7a43"
MESSAGES_PATHS = ("/webhooks/message-status", "/webhooks/inbound-message")


# -- helpers -----------------------------------------------------------------------------------------
def cli(app, *args):
    """Run `flask <args>` against `app`."""
    return app.test_cli_runner().invoke(args=list(args))


def verified(method, url, headers, body, keyring=Keyring([SECRET])):
    """The payload of a request Vonage could have sent.

    :raises SignatureError: when its signature does not verify with `keyring`.
    """
    parts = urlsplit(url)
    if parts.path in MESSAGES_PATHS:
        assert method == "POST"
        verify_jwt(headers.get("Authorization"), body, keyring)
        return json.loads(body)
    params = sms_params(parts.query, body, headers.get("Content-Type", ""))
    verify_sms(params, keyring, SMS_METHOD)
    return params


def parse_curl(line):
    """(method, url, headers, body) of one printed curl command."""
    argv = shlex.split(line)
    assert argv[0] == "curl"
    method, url, headers, body = "GET", None, {}, b""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-X":
            method = next(args)
        elif arg == "-H":
            name, _, value = next(args).partition(": ")
            headers[name] = value
        elif arg == "--data-binary":
            body = next(args).encode()
        elif arg not in ("-sS", "-i"):
            url = arg
    return method, url, headers, body


def curl_lines(output):
    return [line for line in output.splitlines() if line.startswith("curl ")]


@contextlib.contextmanager
def serving(app):
    """The in-process app on a loopback port (its worker is the test's to run)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Verifier:
    """A stand-in deployment that only checks signatures: 200 and a record, or 401 and the reason."""

    def __init__(self, secret=SECRET):
        self.keyring = Keyring([secret])
        self.received = []  # (method, url path and query, headers, body, payload)

    def answer(self, method, target, headers, body):
        try:
            payload = verified(method, target, headers, body, self.keyring)
        except SignatureError as exc:
            return 401, {"error": exc.reason}
        self.received.append((method, target, headers, body, payload))
        return 200, None


@contextlib.contextmanager
def verifying_server(secret=SECRET):
    verifier = Verifier(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, reply = verifier.answer(self.command, self.path, dict(self.headers.items()), body)
            payload = json.dumps(reply).encode() if reply else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_GET

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    verifier.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield verifier
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def work(app):
    return Worker(get_storage(app), app.config, name="test-worker").run_until_idle()


# -- trigger --print ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["status", "--status", "rejected", "--channel", "whatsapp"],
    ["inbound", "--channel", "whatsapp", "--type", "reaction"],  # non-ASCII body: the emoji
    ["inbound", "--channel", "viber_service", "--type", "image", "--version", "v0.1"],
    ["sms", "--via", "get"],
    ["sms", "--via", "form", "--parts", "3"],
    ["dlr", "--via", "json", "--status", "failed"],
    ["conversation"],
])
def test_print_shows_curl_commands_whose_signatures_verify(app, args):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: --print must send nothing
    result = cli(app, "vonage", "trigger", *args, "--url", url, "--print")
    assert result.exit_code == 0, result.output
    commands = curl_lines(result.output)
    assert commands and len(commands) == result.output.count("\n# ") + 1
    for line in commands:
        method, target, headers, body = parse_curl(line)
        assert target.startswith(url + "/webhooks/")
        verified(method, target, headers, body)


def test_print_applies_field_overrides_in_each_shape(app):
    inbound = cli(app, "vonage", "trigger", "inbound", "--version", "v0.1", "--to", "447700900001",
                  "--from", "447700900002", "--text", "hello 'quoted' & more", "--message-uuid", "m-1", "--print")
    (line,) = curl_lines(inbound.output)
    payload = verified(*parse_curl(line))
    assert payload["to"]["number"] == "447700900001" and payload["from"]["number"] == "447700900002"
    assert payload["message"]["content"]["text"] == "hello 'quoted' & more" and payload["message_uuid"] == "m-1"

    dlr = cli(app, "vonage", "trigger", "dlr", "--to", "447700900003", "--from", "AcmeShop", "--client-ref", "r-9",
              "--message-id", "0A00000000000001", "--via", "get", "--print")
    params = verified(*parse_curl(curl_lines(dlr.output)[0]))
    assert (params["msisdn"], params["to"], params["client-ref"], params["messageId"]) == (
        "447700900003", "AcmeShop", "r-9", "0A00000000000001")


@pytest.mark.parametrize("args, message", [
    (["status", "--via", "get"], "--via does not apply to `trigger status`"),
    (["sms", "--all"], "--all does not apply"),
    (["status", "--status", "accepted"], "--status for a Messages status"),
    (["dlr", "--status", "read"], "--status for a delivery receipt"),
    (["inbound", "--channel", "sms", "--type", "image"], "--type for sms is one of text"),
    (["inbound", "--all", "--type", "text"], "leave out --status and --type"),
    (["sms", "--parts", "50", "--text", "short"], "at least 50 characters"),
])
def test_options_that_make_no_sense_are_usage_errors(app, args, message):
    result = cli(app, "vonage", "trigger", *args, "--print")
    assert result.exit_code == 2 and message in result.output


# -- trigger, sent -----------------------------------------------------------------------------------
def test_trigger_says_so_when_nothing_is_running(app):
    result = cli(app, "vonage", "trigger", "status", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert "nothing answers at" in result.output and "python3 dev.py serve" in result.output


def test_trigger_prints_each_answer_and_fails_when_refused(app):
    with verifying_server(secret="another-secret-entirely-1234") as target:
        result = cli(app, "vonage", "trigger", "conversation", "--url", target.url)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("POST ")]
    assert len(lines) == 5
    assert all("401 bad_signature" in line and line.endswith(" ms") for line in lines)
    assert "5 of 5 callbacks were not accepted" in result.output and "signature secret" in result.output


def test_every_status_sample_reaches_its_handler(app, calls):
    with serving(app) as url:
        result = cli(app, "vonage", "trigger", "status", "--all", "--url", url)
    assert result.exit_code == 0, result.output
    assert result.output.count(" 200 ") == len(samples.STATUSES) * len(samples.CHANNELS)
    assert work(app) == len(samples.STATUSES) * len(samples.CHANNELS)
    assert all(name == event.status for name, event in calls)
    assert {(e.channel, e.status) for _, e in calls} == {(c, s) for c in samples.CHANNELS for s in samples.STATUSES}


def expected_inbound_handler(event):
    for key in (f"{event.channel}:{event.message_type}", event.message_type):
        if key in handlers.INBOUND_HANDLERS:
            return f"inbound-{key}"
    return "default-inbound"


@pytest.mark.parametrize("version", ["v1", "v0.1"])
def test_every_inbound_sample_reaches_its_handler(app, calls, version):
    with serving(app) as url:
        result = cli(app, "vonage", "trigger", "inbound", "--all", "--version", version, "--url", url)
    assert result.exit_code == 0, result.output
    work(app)
    assert count_states(get_storage(app).engine) == {"done": len(calls)}
    assert all(name == expected_inbound_handler(event) for name, event in calls)
    assert {(e.channel, e.message_type) for _, e in calls} == {
        (channel, message_type) for channel, types in samples.INBOUND_TYPES.items() for message_type in types
    }


@pytest.mark.parametrize("via", VIAS)
def test_multipart_sms_in_scrambled_order_is_joined_then_dispatched(app, calls, via):
    text = "Your parcel 48213 is ready at the Trafalgar Sq locker, code 7731."
    with serving(app) as url:
        result = cli(app, "vonage", "trigger", "sms", "--parts", "4", "--via", via, "--text", text, "--url", url)
    assert result.exit_code == 0, result.output
    parts = [line.split("part ")[1][0] for line in result.output.splitlines() if "part " in line]
    assert sorted(parts) == ["1", "2", "3", "4"] and parts != sorted(parts)
    work(app)
    ((name, event),) = calls
    assert (name, event.text, event.parts, event.incomplete) == ("inbound-text", text, 4, False)


def test_every_delivery_receipt_reaches_its_handler(app, calls):
    with serving(app) as url:
        for i, status in enumerate(samples.DLR_STATUSES):
            via = VIAS[i % 3]
            result = cli(app, "vonage", "trigger", "dlr", "--status", status, "--via", via, "--url", url)
            assert result.exit_code == 0, result.output
    work(app)
    assert [name for name, _ in calls] == list(samples.DLR_STATUSES)


@pytest.mark.parametrize("version", ["v1", "v0.1"])
def test_conversation_ends_read_with_the_duplicate_counted_and_the_late_status_not_applied(app, calls, version):
    with serving(app) as url:
        result = cli(app, "vonage", "trigger", "conversation", "--version", version, "--url", url)
    assert result.exit_code == 0, result.output
    work(app)
    storage = get_storage(app)
    message_id = calls[0][1].message_id
    message = storage.reads.message(message_id)
    assert message["status"] == "read"
    assert [(h["status"], h["applied"]) for h in message["history"]] == [
        ("submitted", True), ("read", True), ("delivered", False)]
    assert [e["deliveries"] for e in storage.reads.events(kind="message-status")] == [2, 1, 1]  # newest first
    assert [(name, event.superseded) for name, event in calls[:3]] == [
        ("submitted", False), ("read", False), ("delivered", True)]
    reply = calls[3][1]
    assert calls[3][0] == "inbound-text" and reply.from_ == message["to"] and reply.to == message["from"]
    assert f"message {message_id}: should end at read" in result.output


@pytest.mark.slow
def test_every_sample_is_accepted_and_processed_by_a_real_server(tmp_path, make_app):
    env = app_env(f"sqlite:///{tmp_path / 'served.sqlite3'}", VONAGE_SIGNATURE_SECRET=SECRET,
                  VONAGE_SIGNATURE_METHOD=SMS_METHOD, ADMIN_TOKEN=ADMIN_TOKEN)
    app = make_app()  # the CLI's own app: same secret and method, its own database
    texts = {via: f"Multipart sent as {via}: parcel 48213 waits at locker 7731." for via in VIAS}
    # One process, so one worker thread takes events in arrival order: with two, a later status can be
    # processed first, and "the late delivered is not applied" would depend on scheduling.
    with gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log") as server:
        runs = [["status", "--all"], ["inbound", "--all"], ["inbound", "--all", "--version", "v0.1"],
                *(["sms", "--parts", "3", "--via", via, "--text", text] for via, text in texts.items()),
                *(["dlr", "--status", status] for status in samples.DLR_STATUSES), ["conversation"]]
        for args in runs:
            result = cli(app, "vonage", "trigger", *args, "--url", server.url)
            assert result.exit_code == 0, result.output
        conversation_id = result.output.rsplit("message ", 1)[1].split(":")[0]

        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"

        def settled():
            found = api.get(server.url + "/api/events?limit=1000", timeout=5).json()["events"]
            return found if all(e["state"] == "done" for e in found) else None

        deadline = time.monotonic() + 30
        while (found := settled()) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert found is not None, server.log_tail()
        inbound_count = sum(len(types) for types in samples.INBOUND_TYPES.values())
        statuses = len(samples.STATUSES) * len(samples.CHANNELS)
        assert len(found) == statuses + 2 * inbound_count + 3 * 3 + len(samples.DLR_STATUSES) + 4

        for event in found:
            if event["kind"] == "message-status" and event["message_id"] != conversation_id:
                message = api.get(server.url + f"/api/messages/{event['message_id']}", timeout=5).json()
                assert message["status"] == event["status"]
        conversation = api.get(server.url + f"/api/messages/{conversation_id}", timeout=5).json()
        assert conversation["status"] == "read"
        assert [(h["status"], h["applied"]) for h in conversation["history"]] == [
            ("submitted", True), ("read", True), ("delivered", False)]
        late = api.get(server.url + f"/api/events?message_id={conversation_id}", timeout=5).json()["events"]
        assert {e["status"]: e["deliveries"] for e in late} == {"submitted": 1, "read": 1, "delivered": 2}
        joined = api.get(server.url + "/api/messages?direction=inbound&limit=1000", timeout=5).json()["messages"]
        assert set(texts.values()) <= {m["text"] for m in joined}
        api.close()


# -- configure ---------------------------------------------------------------------------------------
def application(base, name="acme-messaging-prod"):
    app = {
        "id": APP_ID,
        "capabilities": {"messages": {"version": "v1", "webhooks": {
            "inbound_url": {"address": f"{base}/webhooks/inbound-message", "http_method": "POST"},
            "status_url": {"address": f"{base}/webhooks/message-status", "http_method": "POST"},
        }}},
    }
    return {**app, "name": name} if name else app


@pytest.fixture
def vonage_app(make_app):
    """An app with Vonage API credentials and an application id."""
    return make_app(VONAGE_API_KEY=DEFAULT_API_KEY, VONAGE_API_SECRET=DEFAULT_API_SECRET,
                    VONAGE_APPLICATION_ID=APP_ID)


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


# -- doctor ------------------------------------------------------------------------------------------
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
    # Outside development the app refuses to start with these (tests/test_first_hour.py).
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


# -- events resend -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, send", [
    ("message-status", lambda v: v.status(samples.message_status("read", "whatsapp"))),
    ("inbound-message", lambda v: v.inbound(samples.inbound_message("whatsapp", "reaction"))),
    ("inbound-message", lambda v: v.inbound(samples.inbound_message("rcs", "text", version="v0.1"))),
    ("inbound-sms", lambda v: v.sms("inbound-sms", samples.inbound_sms("Grüße & a=b"), via="GET")),
    ("inbound-sms", lambda v: v.sms("inbound-sms", samples.inbound_sms(), via="form")),
    ("delivery-receipt", lambda v: v.sms("delivery-receipt", samples.delivery_receipt("failed"), via="json")),
])
def test_resend_sends_the_stored_callback_freshly_signed_the_way_it_came(app, client, kind, send):
    assert send(Vonage(client)).status_code == 200
    (summary,) = get_storage(app).reads.events()
    row = get_storage(app).reads.stored(summary["id"])
    time.sleep(1.1)  # so a fresh SMS timestamp differs from the stored one
    with verifying_server() as target:
        result = cli(app, "events", "resend", str(row.id), "--to", target.url)
    assert result.exit_code == 0, result.output
    assert f"event {row.id} ({kind}" and " 200 " in result.output
    ((method, path, headers, body, payload),) = target.received
    assert urlsplit(path).path == f"/webhooks/{kind}"
    if kind in ("message-status", "inbound-message"):
        assert body == row.body  # byte for byte: the new JWT hashes exactly what Vonage sent
        return
    stored = sms_params(row.query, row.body, row.content_type)
    assert payload["timestamp"] != stored["timestamp"] and payload["nonce"] != stored["nonce"]
    unsigned = {"sig", "timestamp", "nonce"}
    assert {k: v for k, v in payload.items() if k not in unsigned} == {
        k: v for k, v in stored.items() if k not in unsigned}
    assert method == ("GET" if row.query else "POST")
    assert headers.get("Content-Type", "").split(";")[0] == (row.content_type.split(";")[0] if row.body else "")


def test_resend_to_a_second_deployment_stores_and_processes_it(app, vonage, make_app, tmp_path):
    payload = samples.message_status("delivered", "messenger")
    vonage.status(payload)
    second = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'second.sqlite3'}")
    with serving(second) as url:
        result = cli(app, "events", "resend", "1", "--to", url)
    assert result.exit_code == 0, result.output
    assert work(second) == 1
    assert get_storage(second).reads.message(payload["message_uuid"])["status"] == "delivered"


def test_resend_fails_clearly(app, vonage):
    assert cli(app, "events", "resend", "42", "--to", "http://127.0.0.1:1").output.endswith("no event 42\n")
    vonage.status(samples.message_status("delivered"))
    with verifying_server(secret="not-our-secret-at-all-000") as target:
        refused = cli(app, "events", "resend", "1", "--to", target.url)
    assert refused.exit_code == 1 and "event 1 was not accepted (401 bad_signature)" in refused.output
