"""CLI twins of the API: flask events list|show|replay|rejected, flask worker, flask init-db; and flask events
resend, over real HTTP on loopback to a stand-in that checks signatures (tests/loopback.py)."""
import json
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import update

from devkit import samples
from receiver.operator.cli.events import parse_age
from receiver.storage import get_storage
from receiver.storage.schema import events
from receiver.webhooks.payloads import sms_params
from tests.conftest import Vonage, count_states
from tests.loopback import cli, serving, verifying_server, work


def test_init_db(runner):
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0 and "database ready" in result.output


def test_worker_until_idle_processes_the_backlog(vonage, runner, engine):
    vonage.status(samples.message_status("delivered"))
    vonage.inbound(samples.inbound_message())
    result = runner.invoke(args=["worker", "--until-idle"])
    assert result.exit_code == 0 and "processed 2 events" in result.output
    assert count_states(engine) == {"done": 2}


def test_events_list_show_replay(vonage, runner, work):
    payload = samples.message_status("rejected", "whatsapp")
    vonage.status(payload)
    work()
    listing = runner.invoke(args=["events", "list"])
    assert listing.exit_code == 0 and payload["message_uuid"] in listing.output and "done" in listing.output

    shown = runner.invoke(args=["events", "show", "1"])
    detail = json.loads(shown.output)
    assert detail["status"] == "rejected" and json.loads(detail["body"]) == payload

    replayed = runner.invoke(args=["events", "replay", "1"])
    assert replayed.exit_code == 0 and "pending again" in replayed.output
    assert "pending" in runner.invoke(args=["events", "list", "--state", "pending"]).output


def test_events_show_unknown_id_fails_clearly(runner):
    result = runner.invoke(args=["events", "show", "42"])
    assert result.exit_code != 0 and "no event 42" in result.output


def test_events_prune_keeps_pending_failed_and_dead(vonage, runner, engine, work):
    for status in ("delivered", "read", "submitted", "rejected"):
        vonage.status(samples.message_status(status, "whatsapp"))
    work()
    with engine.begin() as conn:  # every event is now 40 days old, in each state but "invalid"
        conn.execute(update(events).values(received_at=time.time() - 40 * 86400))
        for status, state in (("read", "failed"), ("submitted", "dead"), ("rejected", "pending")):
            conn.execute(update(events).where(events.c.status == status).values(state=state))
    result = runner.invoke(args=["events", "prune", "--older-than", "30d"])
    assert result.exit_code == 0 and "deleted 1 events" in result.output
    assert count_states(engine) == {"failed": 1, "dead": 1, "pending": 1}


def test_events_prune_leaves_recent_events(vonage, runner, engine, work):
    vonage.status(samples.message_status("delivered"))
    work()
    assert "deleted 0 events" in runner.invoke(args=["events", "prune", "--older-than", "1d"]).output
    assert count_states(engine) == {"done": 1}


def test_events_prune_needs_a_real_age(runner):
    result = runner.invoke(args=["events", "prune", "--older-than", "a month"])
    assert result.exit_code != 0 and "30d" in result.output


def test_parse_age():
    assert [parse_age(t) for t in ("30d", "12h", "90m", "15s", "60")] == [2592000, 43200, 5400, 15, 60]


# -- events resend -------------------------------------------------------------------------------------
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
    if kind in ("inbound-sms", "delivery-receipt"):  # a fresh SMS timestamp (in seconds) must differ
        signed_at = int(sms_params(row.query, row.body, row.content_type)["timestamp"])
        while int(time.time()) <= signed_at:
            time.sleep(0.02)
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
