"""CLI twins of the API: flask events list|show|replay|rejected, flask worker, flask init-db."""
import json
import time

from sqlalchemy import update

from devkit import samples
from receiver.operator.cli.events import parse_age
from receiver.storage.schema import events
from tests.conftest import count_states


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
