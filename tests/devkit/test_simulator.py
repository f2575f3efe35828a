"""devkit.simulator over real HTTP on loopback: what it accepts, and the callbacks it sends to a small
receiver that verifies each JWT with receiver.webhooks.signatures.verify_jwt, as the app does."""
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devkit.simulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, running_simulator
from devkit.simulator.cli import simulator_command, simulator_settings
from receiver.sending.bodies import build_message
from receiver.sending.client import MessagesClient, SendError
from receiver.sending.keys import public_key_pem
from receiver.webhooks.keyring import Keyring
from receiver.webhooks.signatures import SignatureError, verify_jwt
from tests.servers import wait_for

SECRET = "test-signature-secret-Yq9vD3kE7pL2sX8w"
APP_ID = "5c1f8e2a-93d4-4b7e-a0c6-2f9d8e1b7a43"
CUSTOMER = "447700900123"
OUR_NUMBER = "447700900456"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def private_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@dataclass
class Hit:
    path: str
    payload: dict
    claims: dict | None  # None when the signature did not verify
    refusal: str


class Receiver:
    """Stands in for the app: verifies each callback's JWT, records it, answers as scripted (else 200)."""

    def __init__(self):
        self.hits: list[Hit] = []
        # Per callback status ("inbound" for inbound messages): the answers to give, in turn, as
        # (HTTP status, seconds to wait first); 200 once they are used up.
        self.script: dict[str, list[tuple[int, float]]] = {}
        self.url = None

    def statuses(self, path="/webhooks/message-status"):
        return [hit.payload["status"] for hit in self.hits if hit.path == path]

    def answer(self, path, authorization, body):
        try:
            claims, refusal = verify_jwt(authorization, body, Keyring([SECRET])), ""
        except SignatureError as exc:
            claims, refusal = None, exc.reason
        payload = json.loads(body)
        self.hits.append(Hit(path, payload, claims, refusal))
        if claims is None:
            return 401, 0.0
        answers = self.script.get(payload.get("status", "inbound"), [])
        return answers.pop(0) if answers else (200, 0.0)


@contextlib.contextmanager
def serving(receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, wait = receiver.answer(self.path, self.headers.get("Authorization"), body)
            time.sleep(wait)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def receiver():
    with serving(Receiver()) as receiver:
        yield receiver


@pytest.fixture
def make_vonage(receiver, private_pem):
    """Start simulators that send to `receiver` at once, with nothing random unless asked."""
    with contextlib.ExitStack() as stack:
        def start(**options):
            settings = {"receiver_url": receiver.url, "signature_secret": SECRET, "application_id": APP_ID,
                        "public_key": public_key_pem(private_pem), "callback_delay": 0, "reject_share": 0,
                        "duplicate_share": 0, "out_of_order_share": 0, "callback_backoff": 0.01,
                        "callback_timeout": (1.0, 1.0), **options}
            return stack.enter_context(running_simulator(**settings))
        yield start


@pytest.fixture
def vonage(make_vonage):
    return make_vonage()


def send(vonage, channel="sms", **fields):
    """Send one message (a text, or an image on MMS) with Basic auth; return its message_uuid."""
    addresses = {"messenger": ("5671924083648192", "104395831203986"), "rcs": (CUSTOMER, "acme_rbm_agent")}
    to, from_ = addresses.get(channel, (CUSTOMER, OUR_NUMBER))
    content = {"url": "https://cdn.acme.example/a.png"} if channel == "mms" else {"text": "Your order is ready"}
    client = MessagesClient(api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET, api_base=vonage.url)
    body = build_message(channel, "image" if channel == "mms" else "text", to=to, from_=from_, **content, **fields)
    return client.send_message(body).message_uuid


def post(url, path="/v1/messages", body=None):
    """POST JSON to the simulator at `url` with the account's Basic auth."""
    return requests.post(url + path, json=body, auth=(DEFAULT_API_KEY, DEFAULT_API_SECRET), timeout=5)


# -- status callbacks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("channel, statuses", [
    ("sms", ["submitted", "delivered"]),
    ("mms", ["submitted", "delivered"]),
    ("whatsapp", ["submitted", "delivered", "read"]),
    ("messenger", ["submitted", "delivered", "read"]),
    ("viber_service", ["submitted", "delivered", "read"]),
    ("rcs", ["submitted", "delivered", "read"]),
])
def test_each_channel_reports_its_statuses_signed_as_vonage_signs(vonage, receiver, channel, statuses):
    message_uuid = send(vonage, channel, client_ref="order-48213")
    vonage.wait_idle()

    assert receiver.statuses() == statuses
    [sent] = vonage.sent
    for hit in receiver.hits:
        assert hit.claims is not None, hit.refusal
        assert (hit.claims["api_key"], hit.claims["application_id"]) == (DEFAULT_API_KEY, APP_ID)
        assert hit.payload["message_uuid"] == message_uuid and hit.payload["channel"] == channel
        assert (hit.payload["to"], hit.payload["from"]) == (sent.body["to"], sent.body["from"])
        assert hit.payload.get("client_ref") == sent.body.get("client_ref")
    assert all(callback.delivered for callback in vonage.callbacks)


def test_a_message_without_client_ref_gets_callbacks_without_one(vonage, receiver):
    send(vonage)
    vonage.wait_idle()

    assert all("client_ref" not in hit.payload for hit in receiver.hits)


def test_the_per_message_webhook_url_is_honoured(vonage, receiver):
    send(vonage, webhook_url=receiver.url + "/elsewhere/status")
    vonage.wait_idle()

    assert {hit.path for hit in receiver.hits} == {"/elsewhere/status"}
    assert receiver.statuses("/elsewhere/status") == ["submitted", "delivered"]


def test_webhook_version_v01_sends_the_legacy_shape(vonage, receiver):
    message_uuid = send(vonage, "whatsapp", webhook_version="v0.1", client_ref="order-1")
    vonage.wait_idle()

    first = receiver.hits[0].payload
    assert first["message_uuid"] == message_uuid and "channel" not in first
    assert first["to"] == {"type": "whatsapp", "number": CUSTOMER}
    assert first["from"] == {"type": "whatsapp", "number": OUR_NUMBER}
    assert first["client_ref"] == "order-1"


def test_forced_duplicates_send_each_callback_twice_with_the_same_body(make_vonage, receiver):
    vonage = make_vonage(duplicate_share=1)
    send(vonage)
    vonage.wait_idle()

    assert receiver.statuses() == ["submitted", "submitted", "delivered", "delivered"]
    assert receiver.hits[0].payload == receiver.hits[1].payload and receiver.hits[0].claims is not None
    assert [c.duplicate for c in vonage.callbacks] == [False, True, False, True]


def test_forced_out_of_order_swaps_two_neighbouring_statuses(make_vonage, receiver):
    vonage = make_vonage(out_of_order_share=1, seed=3)
    send(vonage, "whatsapp")
    vonage.wait_idle()

    arrived = receiver.statuses()
    assert arrived in (["delivered", "submitted", "read"], ["submitted", "read", "delivered"])
    assert vonage.sent[0].statuses == arrived


def test_forced_rejections_carry_vonages_error_codes(make_vonage, receiver):
    vonage = make_vonage(reject_share=1, seed=7)
    for channel in ("sms", "whatsapp"):
        for _ in range(6):
            send(vonage, channel)
    vonage.wait_idle()

    assert {tuple(m.statuses) for m in vonage.sent} == {("rejected",), ("submitted", "undeliverable")}
    codes = {(hit.payload["channel"], hit.payload["status"], hit.payload["error"]["title"])
             for hit in receiver.hits if "error" in hit.payload}
    assert codes == {("sms", "rejected", "1250"), ("sms", "undeliverable", "1100"),
                     ("whatsapp", "rejected", "1340"), ("whatsapp", "undeliverable", "1100")}  # 1340: the 24 h window


def test_the_same_seed_makes_the_same_choices(make_vonage):
    plans = []
    for _ in range(2):
        vonage = make_vonage(receiver_url=None, reject_share=0.5, duplicate_share=0.5, out_of_order_share=0.5, seed=11)
        for _ in range(5):
            send(vonage, "whatsapp")
        plans.append([(m.statuses, [c.duplicate for c in vonage.callbacks]) for m in vonage.sent])

    assert plans[0] == plans[1]


# -- delivery: retries as Vonage retries ---------------------------------------------------------------
def test_a_5xx_answer_is_retried_until_the_receiver_takes_it(vonage, receiver):
    receiver.script = {"submitted": [(503, 0.0), (500, 0.0)]}
    send(vonage)
    vonage.wait_idle()

    assert sorted(receiver.statuses()) == ["delivered", "submitted", "submitted", "submitted"]
    assert [a.status for a in vonage.callbacks[0].attempts] == [503, 500, 200]


def test_a_timeout_is_retried(make_vonage, receiver):
    vonage = make_vonage(callback_timeout=(1.0, 0.2))
    receiver.script = {"submitted": [(200, 0.5)]}
    send(vonage)
    vonage.wait_idle()

    first = vonage.callbacks[0].attempts
    assert [a.status for a in first] == [None, 200] and "ReadTimeout" in first[0].error


def test_retries_are_bounded(make_vonage, receiver):
    vonage = make_vonage(callback_retries=2)
    receiver.script = {"submitted": [(500, 0.0)] * 3, "delivered": [(500, 0.0)] * 3}
    send(vonage)
    vonage.wait_idle()

    assert [len(c.attempts) for c in vonage.callbacks] == [3, 3]
    assert not any(c.delivered for c in vonage.callbacks)


def test_a_4xx_answer_is_not_retried(vonage, receiver):
    receiver.script = {"submitted": [(400, 0.0)]}
    send(vonage)
    vonage.wait_idle()

    assert [(c.attempts[0].status, len(c.attempts)) for c in vonage.callbacks] == [(400, 1), (200, 1)]
    assert receiver.statuses() == ["submitted", "delivered"]


def test_wait_idle_says_when_callbacks_are_still_due(make_vonage):
    vonage = make_vonage(callback_delay=30)
    send(vonage)

    with pytest.raises(TimeoutError, match="2 callbacks still due after 0.05s"):
        vonage.wait_idle(0.05)


# -- inbound replies -----------------------------------------------------------------------------------
def test_a_whatsapp_reply_quotes_the_message(vonage, receiver):
    message_uuid = send(vonage, "whatsapp")
    payload = vonage.reply(message_uuid, "Yes please")
    vonage.wait_idle()

    [hit] = [hit for hit in receiver.hits if hit.path == "/webhooks/inbound-message"]
    assert hit.claims is not None and hit.payload == payload
    assert (hit.payload["from"], hit.payload["to"], hit.payload["text"]) == (CUSTOMER, OUR_NUMBER, "Yes please")
    assert hit.payload["context_status"] == "available"
    assert hit.payload["context"] == {"message_uuid": message_uuid, "message_from": OUR_NUMBER}


@pytest.mark.parametrize("channel, context", [("viber_service", True), ("sms", False), ("messenger", False)])
def test_other_channels_quote_only_where_vonage_does(vonage, channel, context):
    message_uuid = send(vonage, channel)

    payload = vonage.reply(message_uuid, "Yes")

    assert payload["channel"] == channel
    assert payload.get("context") == ({"message_uuid": message_uuid} if context else None)


def test_a_reply_to_an_unknown_message_is_refused(vonage):
    with pytest.raises(ValueError, match="no message nope was sent"):
        vonage.reply("nope")


def test_the_inbound_endpoint_plays_a_message_from_anyone(vonage, receiver):
    answer = post(vonage.url, "/_simulator/inbound", {"from": "447700900999", "to": OUR_NUMBER, "channel": "sms",
                                                  "text": "stop sending"})
    vonage.wait_idle()

    [hit] = receiver.hits
    assert answer.status_code == 202 and answer.json() == {"message_uuid": hit.payload["message_uuid"]}
    assert hit.path == "/webhooks/inbound-message" and hit.claims is not None
    assert (hit.payload["from"], hit.payload["text"], hit.payload["sms"]["keyword"]) == (
        "447700900999", "stop sending", "STOP")


def test_the_inbound_endpoint_refuses_an_unknown_channel(vonage):
    answer = post(vonage.url, "/_simulator/inbound", {"channel": "fax", "text": "hi"})

    assert answer.status_code == 400 and "channel must be one of" in answer.json()["detail"]


def test_auto_reply_follows_the_read_receipt(make_vonage, receiver):
    vonage = make_vonage(auto_reply_text="Great, thanks")
    message_uuid = send(vonage, "whatsapp")
    vonage.wait_idle()

    assert [hit.payload.get("status", "inbound") for hit in receiver.hits] == ["submitted", "delivered", "read",
                                                                               "inbound"]
    assert receiver.hits[-1].payload["context"]["message_uuid"] == message_uuid


# -- the Messages API front door -----------------------------------------------------------------------
def test_every_request_is_recorded_with_its_parsed_body(vonage):
    send(vonage, client_ref="r1")

    [request] = vonage.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["Content-Type"] == "application/json" and request.json()["client_ref"] == "r1"


def hs256(claims):
    return jwt.encode(claims, "a-shared-secret-of-at-least-32-bytes!", algorithm="HS256")


def rs256(private_pem, **changes):
    now = int(time.time())
    claims = {"application_id": APP_ID, "iat": now, "jti": "j-1", "exp": now + 300, **changes}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, private_pem, algorithm="RS256")


@pytest.mark.parametrize("authorization, why", [
    pytest.param(lambda pem: None, "no Authorization header", id="none"),
    pytest.param(lambda pem: "Basic " + base64.b64encode(b"a1b2c3d4:wrong").decode(), "wrong API key or secret",
                 id="wrong-basic"),
    pytest.param(lambda pem: "Bearer " + hs256({"application_id": APP_ID}), "The specified alg value is not allowed",
                 id="hs256"),
    pytest.param(lambda pem: "Bearer " + rs256(pem, jti=None), "the token has no jti claim", id="no-jti"),
    pytest.param(lambda pem: "Bearer " + rs256(pem, exp=None), "the token has no exp claim", id="no-exp"),
    pytest.param(lambda pem: "Bearer " + rs256(pem, exp=int(time.time()) - 5), "the token has expired",
                 id="expired"),
    pytest.param(lambda pem: "Token abc", "neither Bearer nor Basic", id="other-scheme"),
])
def test_sends_without_good_credentials_get_401_problem(vonage, private_pem, authorization, why):
    header = authorization(private_pem)
    answer = requests.post(vonage.url + "/v1/messages", json={}, timeout=5,
                           headers={} if header is None else {"Authorization": header})

    assert answer.status_code == 401 and answer.headers["Content-Type"] == "application/problem+json"
    assert why in answer.json()["detail"] and answer.json()["title"] == "Unauthorized"
    assert vonage.sent == []


def test_a_good_rs256_token_is_let_in(vonage, private_pem):
    body = {"channel": "sms", "message_type": "text", "to": CUSTOMER, "from": "Acme", "text": "x"}
    answer = requests.post(vonage.url + "/v1/messages", json=body, timeout=5,
                           headers={"Authorization": "Bearer " + rs256(private_pem)})

    assert answer.status_code == 202 and answer.json() == {"message_uuid": vonage.sent[0].message_uuid}


def test_an_invalid_body_gets_422_with_invalid_parameters(vonage):
    answer = post(vonage.url, body={"channel": "sms", "message_type": "text", "to": CUSTOMER, "from": "Acme"})

    problem = answer.json()
    assert answer.status_code == 422
    assert problem["type"] == "https://developer.nexmo.com/api-errors/messages#1020"
    assert problem["invalid_parameters"] == [{"name": "text", "reason": "is required"}]


def test_a_body_that_is_not_json_gets_422(vonage):
    answer = requests.post(vonage.url + "/v1/messages", data=b"{oops", timeout=5,
                           auth=(DEFAULT_API_KEY, DEFAULT_API_SECRET), headers={"Content-Type": "application/json"})

    assert answer.status_code == 422 and answer.json()["invalid_parameters"][0]["reason"] == "is not valid JSON"


# -- faults --------------------------------------------------------------------------------------------
def test_a_fault_lasts_for_its_count_then_sends_succeed(vonage):
    vonage.set_fault("throttle", count=2, retry_after=1)

    answers = [post(vonage.url, body=build_message("sms", to=CUSTOMER, from_="Acme", text="x")) for _ in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 202]
    assert answers[0].headers["Retry-After"] == "1"


def test_faults_can_be_armed_over_http(vonage):
    armed = post(vonage.url, "/_simulator/faults", {"kind": "server_error", "status": 503})
    answer = post(vonage.url, body=build_message("sms", to=CUSTOMER, from_="Acme", text="x"))

    assert armed.json() == {"fault": "server_error", "count": 1} and answer.status_code == 503


def test_an_unknown_fault_is_refused_over_http(vonage):
    refused = post(vonage.url, "/_simulator/faults", {"kind": "meteor"})

    assert refused.status_code == 400 and "fault kind must be one of" in refused.json()["detail"]


def test_clearing_faults_over_http(vonage):
    vonage.set_fault("throttle", count=5)
    cleared = requests.delete(vonage.url + "/_simulator/faults", timeout=5,
                              headers={"Content-Type": "application/json", "X-Vonage-Simulator": "1"})

    assert cleared.json() == {"fault": None}
    assert post(vonage.url, body=build_message("sms", to=CUSTOMER, from_="Acme", text="x")).status_code == 202


def test_a_slow_answer_still_sends_the_callbacks_with_the_client_ref(make_vonage, receiver):
    vonage = make_vonage()
    vonage.set_fault("slow", seconds=2)
    client = MessagesClient(api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET, api_base=vonage.url,
                            read_timeout=0.2)

    with pytest.raises(SendError) as caught:
        client.send_message(build_message("sms", to=CUSTOMER, from_="Acme", text="x", client_ref="order-77"))
    vonage.wait_idle()

    assert caught.value.kind == "unknown"
    assert [(hit.payload["status"], hit.payload["client_ref"]) for hit in receiver.hits] == [
        ("submitted", "order-77"), ("delivered", "order-77")]


@pytest.mark.parametrize("details, message", [
    ({"kind": "problem", "code": "9999"}, "error code must be one of"),
    ({"kind": "throttle", "count": 0}, "at least 1"),
])
def test_bad_faults_are_refused(vonage, details, message):
    with pytest.raises(ValueError, match=message):
        vonage.set_fault(**details)


# -- the Applications API and account settings ---------------------------------------------------------
APP = {"id": APP_ID, "name": "acme", "keys": {"public_key": "PUBLIC"}, "capabilities": {}}


def test_applications_need_basic_auth(make_vonage):
    vonage = make_vonage(applications={APP_ID: APP})

    anonymous = requests.get(f"{vonage.url}/v2/applications/{APP_ID}", timeout=5)
    known = requests.get(f"{vonage.url}/v2/applications/{APP_ID}", auth=(DEFAULT_API_KEY, DEFAULT_API_SECRET),
                         timeout=5)

    assert anonymous.status_code == 401 and known.json() == APP


def test_a_put_replaces_the_application_but_keeps_its_key(make_vonage):
    vonage = make_vonage(applications={APP_ID: APP})

    answer = requests.put(f"{vonage.url}/v2/applications/{APP_ID}", json={"name": "renamed"}, timeout=5,
                          auth=(DEFAULT_API_KEY, DEFAULT_API_SECRET))

    assert answer.json() == {"id": APP_ID, "name": "renamed", "keys": {"public_key": "PUBLIC"},
                             "_links": {"self": {"href": f"/v2/applications/{APP_ID}"}}}
    assert vonage.applications[APP_ID]["name"] == "renamed"


def test_a_put_without_a_name_is_a_validation_error(make_vonage):
    vonage = make_vonage(applications={APP_ID: APP}, validation_status=400)

    answer = requests.put(f"{vonage.url}/v2/applications/{APP_ID}", json={"capabilities": {}}, timeout=5,
                          auth=(DEFAULT_API_KEY, DEFAULT_API_SECRET))

    assert answer.status_code == 400
    assert answer.json()["invalid_parameters"] == [{"name": "name", "reason": "is required"}]


def test_account_settings_take_credentials_in_the_query(vonage):
    url = f"{vonage.url}/account/settings"
    saved = requests.post(url, params={"api_key": DEFAULT_API_KEY, "api_secret": DEFAULT_API_SECRET},
                          data={"moCallBackUrl": "https://hooks.example/webhooks/inbound-sms"}, timeout=5)
    refused = requests.post(url, auth=(DEFAULT_API_KEY, DEFAULT_API_SECRET), data={"moCallBackUrl": "x"}, timeout=5)

    assert saved.json()["mo-callback-url"] == "https://hooks.example/webhooks/inbound-sms"
    assert refused.status_code == 401 and vonage.account["mo-callback-url"].startswith("https://hooks")


# -- the command ---------------------------------------------------------------------------------------
def test_settings_come_from_the_app_config(private_pem):
    config = {"VONAGE_SIGNATURE_SECRET": f"{SECRET}, previous-secret", "VONAGE_API_KEY": "k1",
              "VONAGE_API_SECRET": "s1", "VONAGE_APPLICATION_ID": APP_ID, "VONAGE_PRIVATE_KEY": private_pem}

    settings = simulator_settings(config)

    assert settings == {"signature_secret": SECRET, "api_key": "k1", "api_secret": "s1", "application_id": APP_ID,
                        "public_key": public_key_pem(private_pem)}


def test_options_win_over_the_config_and_defaults_fill_the_rest():
    settings = simulator_settings({"VONAGE_SIGNATURE_SECRET": "from-config"}, signature_secret="from-option")

    assert settings == {"signature_secret": "from-option", "api_key": DEFAULT_API_KEY,
                        "api_secret": DEFAULT_API_SECRET, "application_id": None, "public_key": None}


def test_the_apps_own_secret_is_used_when_none_is_configured():
    settings = simulator_settings({}, app_secrets=lambda api_key: [f"dev-secret-for-{api_key}"])

    assert settings["signature_secret"] == f"dev-secret-for-{DEFAULT_API_KEY}"


def test_a_private_key_needs_its_application(private_pem):
    with pytest.raises(click.UsageError, match="pass --application-id or set VONAGE_APPLICATION_ID"):
        simulator_settings({"VONAGE_SIGNATURE_SECRET": SECRET, "VONAGE_PRIVATE_KEY": private_pem})


@pytest.mark.parametrize("config, message", [
    ({"VONAGE_APPLICATION_ID": APP_ID, "VONAGE_PRIVATE_KEY": "garbage"}, "VONAGE_PRIVATE_KEY is not a PEM private key"),
    ({"VONAGE_PRIVATE_KEY_PATH": "/nonexistent.key"}, "VONAGE_PRIVATE_KEY_PATH: cannot read /nonexistent.key"),
])
def test_an_app_with_a_bad_key_does_not_start_and_says_why_in_one_line(make_app, config, message):
    from receiver.platform.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        make_app(**{"VONAGE_SIGNATURE_SECRET": SECRET, **config})
    assert message in raised.value.message and "\n" not in raised.value.message


@pytest.mark.parametrize("config, message", [
    ({"VONAGE_SIGNATURE_SECRET": None, "SIGNATURE_VERIFICATION": "off"}, "Error: no signature secret"),
])
def test_the_command_stops_at_a_bad_setting_with_one_line(make_app, config, message):
    app = make_app(**{"VONAGE_SIGNATURE_SECRET": SECRET, **config})
    app.cli.add_command(simulator_command)

    result = app.test_cli_runner().invoke(args=["simulator", "--port", "0"])

    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_the_command_serves_until_interrupted(receiver):
    code = "from devkit.simulator.cli import simulator_command; simulator_command()"
    args = [sys.executable, "-u", "-c", code, "--port", "0", "--receiver-url", receiver.url, "--delay-ms", "0",
            "--reject-share", "0", "--duplicate-share", "0", "--out-of-order-share", "0",
            "--signature-secret", SECRET]
    lines = []
    with subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as child:
        reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
        reader.start()
        try:
            banner = wait_for(lambda: next((line for line in lines if " on http" in line), None))
            url = banner.split(" on ")[1].split(" ")[0]
            answer = post(url, body=build_message("sms", to=CUSTOMER, from_="Acme", text="x" * 40))
            wait_for(lambda: any(line.startswith("sent delivered") for line in lines))
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:  # Ctrl-C ignored: killed, so the `with` does not wait forever
                child.kill()  # (its exit code, -9, fails the test below)
                child.wait(timeout=10)
            reader.join(timeout=5)

    assert banner.startswith("Vonage simulator on http://127.0.0.1:") and answer.status_code == 202
    [accepted] = [line.rstrip() for line in lines if line.startswith("accepted ")]
    assert accepted.endswith(" sms text to 447700900123 'xxxxxxxxxxxxxxxxxxxx'...")
    assert any(line.startswith("sent submitted ") and line.rstrip().endswith(": 200") for line in lines)
    assert child.returncode == 0 and "stopping\n" in lines


# -- what a web page in the developer's browser cannot do ---------------------------------------------
@pytest.mark.parametrize("path, body", [("/_simulator/inbound", '{"channel": "sms", "text": "injected"}'),
                                        ("/_simulator/faults", '{"kind": "server_error"}')])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/json"])
def test_a_cross_origin_simple_post_changes_nothing(vonage, receiver, path, body, content_type):
    # What a page elsewhere can send without a preflight: a simple content type, no custom header, no credentials
    # (JSON is a preflight too, so refusing it without the header costs nothing).
    answer = requests.post(vonage.url + path, data=body, timeout=5,
                           headers={"Content-Type": content_type, "Origin": "https://evil.example"})
    vonage.wait_idle()
    assert answer.status_code == 403 and "X-Vonage-Simulator" in answer.json()["detail"]
    assert receiver.hits == [] and vonage._faults.take() is None


def test_the_local_header_lets_a_script_in(vonage, receiver):
    answer = requests.post(vonage.url + "/_simulator/inbound", json={"channel": "sms", "text": "hi"}, timeout=5,
                           headers={"X-Vonage-Simulator": "1"})
    vonage.wait_idle()
    assert answer.status_code == 202 and len(receiver.hits) == 1


def test_a_rebound_host_name_is_refused(vonage):
    answer = requests.post(vonage.url + "/_simulator/inbound", json={"channel": "sms", "text": "hi"}, timeout=5,
                           auth=(DEFAULT_API_KEY, DEFAULT_API_SECRET), headers={"Host": "evil.example"})
    assert answer.status_code == 403 and "Host" in answer.json()["detail"]


def test_the_simulator_listens_on_loopback_only():
    with pytest.raises(ValueError, match="loopback only"):
        with running_simulator(host="0.0.0.0"):
            pass


def test_configure_and_retire_can_be_tried_against_the_development_simulator(make_app):
    from devkit.simulator.cli import development_applications

    app_id = "0e6b1c2d-3f4a-4b5c-8d9e-0f1a2b3c4d5e"
    with running_simulator(development_applications(app_id, "http://127.0.0.1:3000")) as vonage:
        app = make_app(VONAGE_API_KEY=DEFAULT_API_KEY, VONAGE_API_SECRET=DEFAULT_API_SECRET,
                       VONAGE_APPLICATION_ID=app_id, VONAGE_API_BASE=vonage.url)
        runner = app.test_cli_runner()
        configured = runner.invoke(args=["vonage", "configure", "--base-url", "https://hooks.example",
                                         "--rest-base", vonage.url])
        retired = runner.invoke(args=["vonage", "retire", "--application-id", app_id, "--dry-run"])
    assert configured.exit_code == 0, configured.output
    assert retired.exit_code == 0 and "https://hooks.example/webhooks/inbound-message" in retired.output
