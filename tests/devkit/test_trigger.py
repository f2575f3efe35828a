"""`flask vonage trigger` (devkit.trigger): correctly signed sample callbacks, printed as curl commands or
sent over real HTTP on loopback.

Callbacks go to the app served in a thread (dispatch checked with the worker in this process), to a
small server that only verifies signatures (tests/loopback.py), or to a real gunicorn (slow).
"""
import shlex
import time

import pytest
import requests

import handlers
from devkit import samples
from receiver.operator.signed import VIAS
from receiver.storage import get_storage
from tests.conftest import ADMIN_TOKEN, SECRET, SMS_METHOD, count_states
from tests.loopback import cli, serving, verified, verifying_server, work
from tests.servers import app_env, free_port, gunicorn


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

