"""The same storage guarantees on PostgreSQL, and several workers sharing one database.

Skipped, with the reason, when no PostgreSQL answers (set REQUIRE_POSTGRES=1 to fail instead).
"""
import threading
from collections import Counter

import pytest

import handlers
from receiver import samples
from receiver.storage import get_storage
from receiver.worker import Worker
from tests.conftest import count_states
from tests.conftest import Vonage

pytestmark = pytest.mark.postgres


@pytest.fixture
def storage(pg_app):
    return get_storage(pg_app)


@pytest.fixture
def engine(storage):
    return storage.engine


@pytest.fixture
def sender(pg_app):
    return Vonage(pg_app.test_client())


def test_callback_is_stored_and_duplicates_counted(sender, engine, storage):
    payload = samples.message_status("delivered", "whatsapp")
    assert sender.status(payload).status_code == 200
    assert sender.status(payload).status_code == 200
    (row,) = storage.events()
    assert (row["deliveries"], row["state"], row["message_id"]) == (2, "pending", payload["message_uuid"])


def test_sms_transports_are_stored(sender, engine, storage):
    sender.sms("inbound-sms", samples.inbound_sms(), via="GET")
    sender.sms("delivery-receipt", samples.delivery_receipt("failed"), via="form")
    sender.sms("delivery-receipt", samples.delivery_receipt("delivered"), via="json")
    assert len(storage.events()) == 3


def test_status_only_moves_forward(pg_app, sender, engine, storage):
    base = samples.message_status("submitted", "whatsapp")
    for status in ("delivered", "submitted", "read", "delivered"):  # the second "delivered" is a repeat
        sender.status(dict(base, status=status))
    Worker(storage, pg_app.config, name="w").run_until_idle()
    message = storage.message(base["message_uuid"])
    assert message["status"] == "read"
    assert [h["status"] for h in message["history"]] == ["delivered", "submitted", "read"]


def test_multipart_sms_joined(pg_app, sender, engine, monkeypatch, storage):
    seen = []
    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "text", seen.append)
    parts = samples.inbound_sms_parts("one, two, three, four", 4)
    for i in (4, 2, 1, 3):
        sender.sms("inbound-sms", parts[i - 1])
    Worker(storage, pg_app.config, name="w").run_until_idle()
    (event,) = seen
    assert event.text == "one, two, three, four" and event.parts == 4 and not event.incomplete


def test_replay_and_dead_letter(pg_app, sender, engine, monkeypatch, storage):
    pg_app.config["MAX_ATTEMPTS"] = 2
    monkeypatch.setitem(handlers.STATUS_HANDLERS, "rejected", lambda e: 1 / 0)
    sender.status(samples.message_status("rejected"))
    Worker(storage, pg_app.config, name="w").run_until_idle()
    (row,) = storage.events()
    assert row["state"] == "dead" and "ZeroDivisionError" in row["last_error"]
    assert storage.replay(row["id"])
    assert storage.events()[0]["state"] == "pending"


def test_two_workers_never_dispatch_the_same_event(pg_app, sender, engine, monkeypatch, storage):
    """1,000 events, two workers claiming concurrently (SKIP LOCKED): each dispatched exactly once."""
    dispatched = Counter()
    lock = threading.Lock()

    def record(event):
        with lock:
            dispatched[event.event_id] += 1

    for status in ("submitted", "delivered"):
        monkeypatch.setitem(handlers.STATUS_HANDLERS, status, record)
    for i in range(500):
        base = samples.message_status("submitted")
        sender.status(base)
        sender.status(dict(base, status="delivered"))

    workers = [Worker(storage, pg_app.config, name=f"w{i}") for i in range(2)]
    threads = [threading.Thread(target=w.run_until_idle) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(dispatched) == 1000
    assert set(dispatched.values()) == {1}
    assert all(w.processed > 0 for w in workers), "both workers should have taken part"
    assert count_states(engine) == {"done": 1000}


def test_a_connection_dropped_while_idle_costs_no_503(pg_app, sender, engine):
    import sqlalchemy

    assert sender.status(samples.message_status("submitted")).status_code == 200
    with engine.connect() as conn:  # the server drops every other connection, as a restart does
        conn.execute(sqlalchemy.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    assert sender.status(samples.message_status("delivered")).status_code == 200
    assert count_states(engine) == {"pending": 2}
