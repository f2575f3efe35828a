"""CLI twins of the API: flask events list|show|replay|rejected, flask worker, flask init-db."""
import json

from receiver import inbox, samples


def test_init_db(runner):
    result = runner.invoke(args=["init-db"])
    assert result.exit_code == 0 and "database ready" in result.output


def test_worker_until_idle_processes_the_backlog(vonage, runner, engine):
    vonage.status(samples.message_status("delivered"))
    vonage.inbound(samples.inbound_message())
    result = runner.invoke(args=["worker", "--until-idle"])
    assert result.exit_code == 0 and "processed 2 events" in result.output
    assert inbox.count_by_state(engine) == {"done": 2}


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
