"""The event, message, problems and health pages, and group replay, through Flask's test client."""
import json
import shlex
import time
from urllib.parse import parse_qsl

import pytest

import handlers.status
from devkit import samples
from receiver.kinds import KINDS
from receiver.operator.console import problems
from receiver.storage import get_storage
from receiver.storage.events import record_event
from receiver.webhooks.keyring import Keyring
from receiver.webhooks.payloads import callback
from receiver.webhooks.signatures import verify_jwt, verify_sms
from receiver.worker.loop import Worker
from tests.conftest import SECRET, SMS_METHOD, Vonage, compact
from tests.console_client import csrf, login


def page(client, path):
    response = client.get(path)
    assert response.status_code == 200, path
    return response.get_data(as_text=True)


def curl_of(html):
    """The curl command shown on an event page, unescaped, as argv."""
    text = html.split('<pre id="curl">', 1)[1].split("</pre>", 1)[0]
    for escaped, plain in (("&#34;", '"'), ("&#39;", "'"), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")):
        text = text.replace(escaped, plain)
    return shlex.split(text)


def test_the_event_page_shows_the_request_its_verification_and_a_resigned_curl(operator, vonage, work):
    payload = samples.message_status("read", "whatsapp")
    vonage.status(payload)
    work()
    html = page(operator, "/ui/events/1")
    assert "&#34;message_uuid&#34;: &#34;" + payload["message_uuid"] in html  # indented JSON, escaped
    assert "Messages API JWT (HS256)" in html and "<dt>jti</dt>" in html and "<dt>iat</dt>" in html
    argv = curl_of(html)
    headers = dict(argv[i + 1].split(": ", 1) for i, arg in enumerate(argv) if arg == "-H")
    body = argv[argv.index("--data-binary") + 1].encode()
    assert argv[argv.index("-X") + 2] == "http://localhost/webhooks/message-status"
    assert json.loads(body) == payload
    assert verify_jwt(headers["Authorization"], body, Keyring([SECRET]))["api_key"] == "a1b2c3d4"


def test_an_event_stored_without_a_signature_check_says_so(make_app):
    app = make_app(SIGNATURE_VERIFICATION="jwt-only")
    client = app.test_client()
    assert Vonage(client).sms("inbound-sms", samples.inbound_sms("Hello"), sign=False).status_code == 200
    login(client)
    html = page(client, "/ui/events/1")
    assert "not verified: SIGNATURE_VERIFICATION=jwt-only when it arrived" in html and "SMS API signature" not in html


def test_an_sms_event_shows_its_parameters_and_resigns_them(operator, vonage, work):
    vonage.sms("inbound-sms", samples.inbound_sms("Hello"), via="form")
    work()
    html = page(operator, "/ui/events/1")
    assert "<td>text</td><td>Hello</td>" in html and "SMS API signature" in html
    argv = curl_of(html)
    params = dict(parse_qsl(argv[argv.index("--data-binary") + 1], keep_blank_values=True))
    assert params["text"] == "Hello"
    verify_sms(params, Keyring([SECRET]), SMS_METHOD)


def test_no_curl_without_a_secret_for_the_events_key(make_app):
    app = make_app(VONAGE_API_KEY="a1b2c3d4")  # the secret is that key's alone
    operator = app.test_client()
    login(operator)
    storage = get_storage(app)
    payload = samples.message_status("delivered")
    found = callback(KINDS["message-status"], payload, body=compact(payload), query="", content_type="application/json",
                     headers={"api_key": "retired-key"}, api_key="retired-key")
    record_event(storage.engine, found)
    assert "no signature secret is configured for api key retired-key" in page(operator, "/ui/events/1")


class Failing:
    """An app whose shipped status handlers raise, as one calling a CRM that is down would, with a
    logged-in client, a signing sender and the worker."""

    def __init__(self, app):
        self.app, self.client = app, app.test_client()
        login(self.client)
        self.vonage = Vonage(self.client)
        self.storage = get_storage(app)

    def work(self):
        Worker(self.storage, self.app.config).run_until_idle()


@pytest.fixture
def failing(make_app, monkeypatch):
    def fail(event, *args):
        raise RuntimeError("CRM is down")

    monkeypatch.setattr(handlers.status, "_log", fail)
    return lambda **settings: Failing(make_app(**settings))


def test_a_failed_event_shows_its_next_retry_and_traceback(failing):
    crm = failing(RETRY_BASE_SECONDS=60.0)
    crm.vonage.status(samples.message_status("delivered"))
    crm.work()
    html = page(crm.client, "/ui/events/1")
    assert "<dt>next retry</dt>" in html and "RuntimeError: CRM is down" in html and "in on_delivered" in html


def test_the_message_page_orders_statuses_as_vonage_stamped_them(operator, vonage, work):
    submitted = samples.message_status("submitted", "whatsapp", timestamp="2026-12-01T10:00:00.000Z")
    same = {k: submitted[k] for k in ("message_uuid", "to", "from", "client_ref")}
    vonage.status(submitted)
    vonage.status(samples.message_status("read", "whatsapp", timestamp="2026-12-01T10:00:20.000Z", **same))
    vonage.status(samples.message_status("delivered", "whatsapp", timestamp="2026-12-01T10:00:04.000Z", **same))
    vonage.inbound(samples.inbound_message("whatsapp", text="Thanks!", to=same["from"], from_=same["to"]))
    work()
    html = page(operator, f"/ui/messages/{submitted['message_uuid']}")
    timeline = html.split('<table class="timeline">', 1)[1].split("</table>", 1)[0]
    assert timeline.index("submitted") < timeline.index("delivered") < timeline.index("<td>read")
    delivered_row = timeline.split("<tr", 3)[3]
    assert "superseded" in delivered_row and "3rd" in delivered_row and "out of order" in delivered_row
    assert "out of order" not in timeline.split("<tr", 4)[4]  # read came before delivered: not late
    conversation = html.split('<table class="conversation">', 1)[1]
    assert "Thanks!" in conversation and "them →" in conversation and "→ them" in conversation
    assert "{% block sent %}" not in html and "What we sent" not in html


def test_failover_status_events_are_grouped_by_workflow(operator, vonage, work):
    first = samples.message_status("rejected", "whatsapp", to="447700900222",
                                   workflow={"id": "wf-1", "item_number": "1", "items_total": "2"})
    second = samples.message_status("delivered", "sms", to="447700900222", **{"from": first["from"]},
                                    workflow={"workflow_id": "wf-1", "items_number": "2", "total_items": "2"})
    vonage.status(first)
    vonage.status(second)
    work()
    html = page(operator, f"/ui/messages/{second['message_uuid']}")
    workflow = html.split("<h3>Workflow wf-1</h3>", 1)[1].split("</ol>", 1)[0]
    assert workflow.index("item 1 of 2") < workflow.index("item 2 of 2")
    assert "rejected" in workflow and "delivered" in workflow


def test_hostile_inbound_text_and_profile_name_are_escaped(operator, vonage, work):
    hostile = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'
    inbound = samples.inbound_message("whatsapp", text=hostile, profile={"name": hostile})
    vonage.inbound(inbound)
    work()
    for path in (f"/ui/messages/{inbound['message_uuid']}", "/ui/events/1", "/ui/"):
        html = page(operator, path)
        assert "<script>window" not in html and "<img src=x" not in html, path
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page(operator, f"/ui/messages/{inbound['message_uuid']}")


def test_unknown_event_and_message_are_404_pages(operator):
    assert operator.get("/ui/events/999").status_code == 404
    assert operator.get("/ui/messages/no-such-message").status_code == 404


# -- problems ----------------------------------------------------------------------------------------
def test_problems_are_grouped_by_handler_exception_and_schema_fields(failing):
    crm = failing(MAX_ATTEMPTS=1)
    for _ in range(3):
        crm.vonage.status(samples.message_status("delivered"))
    crm.vonage.status(samples.message_status("read", "whatsapp"))
    crm.vonage.status({**samples.message_status("delivered"), "status": ""})  # an empty status: invalid
    crm.vonage.status(samples.message_status("read"), token="forged.token.here")
    crm.work()
    html = page(crm.client, "/ui/problems")
    groups = html.split('<table class="problems">', 1)[1].split("</table>", 1)[0].split("<tr>")[2:]
    assert "<td>3</td>" in groups[0] and "RuntimeError in on_delivered" in groups[0] and "3 dead" in groups[0]
    singles = sorted(groups[1:], key=lambda group: "invalid" in group)  # equal sizes: the newest first
    assert "RuntimeError in on_read" in singles[0]
    assert "fields: status" in singles[1] and "1 invalid" in singles[1]
    rejected = html.split('<table class="rejections">', 1)[1]
    assert "<code>malformed_token</code>" in rejected and problems.NOT_VONAGE in rejected


def test_a_group_is_replayed_after_a_preview_of_exactly_its_ids(failing, monkeypatch):
    monkeypatch.setattr(problems, "MAX_REPLAY", 2)
    crm = failing(MAX_ATTEMPTS=1)
    for _ in range(3):
        crm.vonage.status(samples.message_status("delivered"))
    crm.work()
    (group,) = problems.group_events(crm.storage.reads.problem_events(problems.SCAN))
    preview = page(crm.client, f"/ui/problems/{group.key}/replay")
    assert "Replay 2 events" in preview and "3 in the group" in preview and 'name="ids" value="3,2"' in preview
    refused = crm.client.post(f"/ui/problems/{group.key}/replay", data={"ids": "3,2"})
    assert refused.status_code == 403
    response = crm.client.post(f"/ui/problems/{group.key}/replay", data={"ids": "3,2", "csrf_token": csrf(crm.client)})
    assert response.status_code == 302
    assert {e["id"]: e["state"] for e in crm.storage.reads.events()} == {3: "pending", 2: "pending", 1: "dead"}
    assert "2 of 2 events are pending again" in page(crm.client, "/ui/problems")


@pytest.mark.parametrize("error, expected", [
    (('Traceback (most recent call last):\n  File "/srv/app/receiver/worker/loop.py", line 180, in _dispatch\n'
      '    dispatch.dispatch(event)\n  File "/srv/app/handlers/status.py", line 12, in on_delivered\n'
      '    crm.post(event)\n  File "/srv/app/venv/crm.py", line 3, in post\n    raise ConnectionError("down")\n'
      'ConnectionError: down\nsecond line of the message'), "ConnectionError in on_delivered"),
    (('Traceback (most recent call last):\n  File "/srv/app/receiver/storage/state.py", line 9, in record\n'
      '    x()\nKeyError: \'to\''), "KeyError outside the handlers (a bug?)"),
])
def test_the_cause_of_a_failing_event(error, expected):
    class Row:
        state, last_error = "dead", error
    assert problems.cause(Row()) == ("failing", expected)


# -- health ------------------------------------------------------------------------------------------
def test_health_says_which_applications_are_safe_to_retire(operator, storage):
    now = time.time()
    for app_id, ago in (("app-busy", 600), ("app-quiet", 2 * 86400)):
        storage.stats.save_traffic("web-1", [{"minute": int((now - ago) // 60), "api_key": "a1b2c3d4",
                                        "application_id": app_id, "outcome": "stored", "count": 5,
                                        "last_at": now - ago, "latency": [5] + [0] * 13}])
    html = page(operator, "/ui/health")
    busy = html.split("<code>app-busy</code>", 1)[1].split("</tr>", 1)[0]
    quiet = html.split("<code>app-quiet</code>", 1)[1].split("</tr>", 1)[0]
    assert '<span class="bad">no</span>: from' in busy and '<span class="ok">yes</span>' in quiet
    assert "<td>last hour</td><td>5</td>" in html


def test_the_bar_counts_what_stats_counts_without_done(storage, vonage, work):
    for status in ("delivered", "read", "submitted"):
        vonage.status(samples.message_status(status))
    work()
    vonage.status(samples.message_status("delivered"))
    full, cheap = storage.stats.collect(), storage.stats.queue_figures()
    assert cheap.by_state == {state: full.by_state[state] for state in cheap.by_state}
    assert (cheap.due, cheap.backlog, cheap.stuck, cheap.live_workers, cheap.stalled) == (
        full.due, full.backlog, full.stuck, full.live_workers, full.stalled)
    assert "done" not in cheap.by_state and full.by_state["done"] == 3


# -- what we sent, and answering from the console --------------------------------------------------
@pytest.fixture(scope="module")
def sending_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def sender_app(make_app, sending_key):
    return make_app(VONAGE_APPLICATION_ID="8d3f0c2e-5b7a-4c1d-9e6f-0a1b2c3d4e5f", VONAGE_PRIVATE_KEY=sending_key)


def test_an_inbound_message_can_be_answered_from_its_page(sender_app):
    client, storage = sender_app.test_client(), get_storage(sender_app)
    login(client)
    payload = samples.inbound_message("whatsapp", "text", text="Can I move my booking?")
    Vonage(client).inbound(payload)
    Worker(storage, sender_app.config, name="w").run_until_idle()
    html = page(client, f"/ui/messages/{payload['message_uuid']}")
    assert 'class="reply"' in html
    response = client.post(f"/ui/messages/{payload['message_uuid']}/reply",
                           data={"text": "Yes: <b>which day</b>?", "csrf_token": csrf(client)})
    assert response.status_code == 302
    (queued,) = storage.outbox.listed()
    request = queued["request"]
    assert (request["to"], request["from"], request["channel"]) == (payload["from"], payload["to"], "whatsapp")
    assert request["text"] == "Yes: <b>which day</b>?" and request["context"] == {"message_uuid": payload["message_uuid"]}


def test_a_reply_without_the_csrf_token_is_refused(sender_app):
    client, storage = sender_app.test_client(), get_storage(sender_app)
    login(client)
    payload = samples.inbound_message("sms", "text")
    Vonage(client).inbound(payload)
    Worker(storage, sender_app.config, name="w").run_until_idle()
    assert client.post(f"/ui/messages/{payload['message_uuid']}/reply", data={"text": "hi"}).status_code == 403
    assert storage.outbox.listed() == []


def test_the_page_of_a_message_we_sent_shows_what_we_sent_escaped(sender_app):
    client, storage = sender_app.test_client(), get_storage(sender_app)
    login(client)
    body = {"to": "447700900123", "from": "447700900456", "channel": "whatsapp", "message_type": "text",
            "text": "<script>alert(1)</script> your code is 4471"}
    message_id = storage.outbox.queue(body)
    storage.inbox.heartbeat("s", 0)
    (row,) = storage.outbox.claim("s", 1, 300)
    storage.outbox.record(row.id, "s", state="sent", message_uuid="a1b2c3d4-0000-4000-8000-000000000001",
                        sent_at=time.time())
    Vonage(client).status(samples.message_status("delivered", "whatsapp", message_uuid="a1b2c3d4-0000-4000-8000-000000000001",
                                                 client_ref=row.client_ref))
    Worker(storage, sender_app.config, name="w").run_until_idle()
    html = page(client, "/ui/messages/a1b2c3d4-0000-4000-8000-000000000001")
    assert f"outbox message {message_id}, sent, last status delivered" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; your code is 4471" in html and "<script>alert" not in html
    assert 'class="reply"' not in html  # our own message: nothing to answer


def test_the_conversation_shows_the_text_we_sent_not_its_client_ref(operator, vonage, work, storage):
    from sqlalchemy import update

    from receiver.sending.bodies import build_message
    from receiver.storage.schema import outbox

    body = build_message("sms", to="447700900777", from_="447700900123", text="Your order has shipped")
    queued = storage.outbox.queue(body)
    with storage.engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.id == queued).values(state="sent", message_uuid="uuid-ours-1"))
    client_ref = storage.outbox.get(queued)["client_ref"]
    vonage.status(samples.message_status("delivered", "sms", message_uuid="uuid-ours-1", to="447700900777",
                                         client_ref=client_ref, **{"from": "447700900123"}))
    work()
    conversation = page(operator, "/ui/messages/uuid-ours-1").split('<table class="conversation">', 1)[1]
    assert "Your order has shipped" in conversation and client_ref not in conversation


def test_without_sending_credentials_health_and_the_log_say_queued_replies_will_not_go(operator, storage, app,
                                                                                        caplog):
    import logging

    from receiver.sending.bodies import build_message
    from receiver.worker import supervisor
    from receiver.worker.supervisor import Supervisor

    storage.outbox.queue(build_message("sms", to="447700900777", from_="447700900123", text="hi"))
    sending = page(operator, "/ui/health").split('<dd id="sending">', 1)[1].split("</dd>", 1)[0]
    assert "not configured" in sending and "1 message queued will never be sent" in sending
    worker = Supervisor(Worker(storage, app.config)).worker
    supervisor._unsent.last = None  # another test's warning may be fresh
    with caplog.at_level(logging.WARNING, logger="receiver.worker"):
        worker.wake_sender()
        worker.wake_sender()
    assert [r.getMessage() for r in caplog.records].count(
        "a handler queued messages that will stay queued: " + "sending is not configured: set VONAGE_APPLICATION_ID "
        "and VONAGE_PRIVATE_KEY (or VONAGE_PRIVATE_KEY_PATH), or VONAGE_API_KEY and VONAGE_API_SECRET") <= 1
    assert any("will stay queued" in r.getMessage() for r in caplog.records)
