"""The same storage guarantees on PostgreSQL, and several workers sharing one database.

Skipped, with the reason, when no PostgreSQL answers (set REQUIRE_POSTGRES=1 to fail instead).
"""
import threading
import time
from collections import Counter

import pytest
import sqlalchemy

import handlers
from app import create_app
from devkit import samples
from receiver.storage import Outcome, get_storage
from receiver.storage.events import event_values
from receiver.storage.groupcommit import GroupCommitter
from receiver.webhooks.payloads import Callback
from receiver.worker.loop import Worker
from tests.conftest import Vonage, base_config, count_states
from tests.servers import wait_for

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
    (row,) = storage.reads.events()
    assert (row["deliveries"], row["state"], row["message_id"]) == (2, "pending", payload["message_uuid"])


def test_sms_transports_are_stored(sender, engine, storage):
    sender.sms("inbound-sms", samples.inbound_sms(), via="GET")
    sender.sms("delivery-receipt", samples.delivery_receipt("failed"), via="form")
    sender.sms("delivery-receipt", samples.delivery_receipt("delivered"), via="json")
    assert len(storage.reads.events()) == 3


def test_status_only_moves_forward(pg_app, sender, engine, storage):
    base = samples.message_status("submitted", "whatsapp")
    for status in ("delivered", "submitted", "read", "delivered"):  # the second "delivered" is a repeat
        sender.status(dict(base, status=status))
    Worker(storage, pg_app.config, name="w").run_until_idle()
    message = storage.reads.message(base["message_uuid"])
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
    (row,) = storage.reads.events()
    assert row["state"] == "dead" and "ZeroDivisionError" in row["last_error"]
    assert storage.inbox.replay([row["id"]]) == 1
    assert storage.reads.events()[0]["state"] == "pending"


@pytest.mark.slow
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
    assert sender.status(samples.message_status("submitted")).status_code == 200
    with engine.connect() as conn:  # the server drops every other connection, as a restart does
        conn.execute(sqlalchemy.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    assert sender.status(samples.message_status("delivered")).status_code == 200
    assert count_states(engine) == {"pending": 2}


def claimed(sender, storage, worker: str, count: int) -> list[int]:
    """`count` stored status callbacks, claimed by `worker`; their ids."""
    for _ in range(count):
        sender.status(samples.message_status("delivered"))
    return [row.id for row in storage.inbox.claim(worker, 300, count)]


def lease_of(engine, event_id: int) -> float:
    with engine.connect() as conn:
        return conn.execute(sqlalchemy.text("SELECT lease_until FROM events WHERE id = :id"), {"id": event_id}).scalar()


def waiting_on_a_lock(engine) -> int:
    """How many other backends of this database wait for a row lock now."""
    with engine.connect() as conn:
        return conn.execute(sqlalchemy.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")).scalar()


def crossed(engine, first: int, second: int, work):
    """Run `work()` in a thread while another transaction takes the rows of events `first` and
    `second` in the other order: a deadlock that `work`'s side detects (the other waits 30 s before
    it looks). What `work()` returned, or what it raised."""
    results = []

    def run():
        try:
            results.append(work())
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results.append(exc)

    with engine.connect() as other:
        other.execute(sqlalchemy.text("SET deadlock_timeout = '30s'"))
        other.execute(sqlalchemy.text("UPDATE events SET note = 'held' WHERE id = :id"), {"id": second})
        thread = threading.Thread(target=run)
        thread.start()
        assert wait_for(lambda: waiting_on_a_lock(engine)) == 1  # `work` holds `first`, waits for `second`
        other.execute(sqlalchemy.text("UPDATE events SET note = 'held' WHERE id = :id"), {"id": first})
        other.commit()
    thread.join(timeout=30)
    (result,) = results
    return result


def test_a_heartbeat_skips_a_claim_another_transaction_holds_instead_of_waiting(sender, engine, storage):
    """The heartbeat waiting on a row its own worker was settling deadlocked with that settle; now a
    held row is left for the next beat, and the others are renewed at once."""
    busy, free = claimed(sender, storage, "w", 2)
    before = lease_of(engine, busy)
    with engine.connect() as other:
        other.execute(sqlalchemy.text("UPDATE events SET note = 'held' WHERE id = :id"), {"id": busy})
        beat = threading.Thread(target=storage.inbox.heartbeat, args=("w", 0), kwargs={"held": [busy, free],
                                                                                   "lease_seconds": 3600})
        beat.start()
        beat.join(timeout=10)
        assert not beat.is_alive(), "the heartbeat waited for a row another transaction holds"
        other.rollback()
    assert lease_of(engine, busy) == before
    assert lease_of(engine, free) > time.time() + 3000


@pytest.fixture
def patient_app(pg_app, migrated_pg_url, tmp_path):
    """pg_app's database, with a statement timeout longer than PostgreSQL's deadlock_timeout (1 s)."""
    app = create_app(dict(base_config(migrated_pg_url, tmp_path / "patient"), DATABASE_TIMEOUT_SECONDS=10.0))
    yield app
    app.extensions["traffic"].stop()
    get_storage(app).dispose()


def test_a_settle_that_loses_a_deadlock_is_run_again_and_nothing_is_dispatched_twice(patient_app):
    """A deadlock rolled the settle back and the worker gave the events back, to be dispatched again;
    the settle is now run again, and the events stay this worker's claims until it succeeds."""
    sender, storage = Vonage(patient_app.test_client()), get_storage(patient_app)
    engine = storage.engine
    first, second = claimed(sender, storage, "w", 2)
    settled = crossed(engine, first, second,
                      lambda: storage.inbox.finish("w", [Outcome(first, "done"), Outcome(second, "done")]))
    assert settled == 2
    assert count_states(engine) == {"done": 2}


def test_a_group_commit_that_loses_a_deadlock_is_run_again(patient_app):
    """Two repeats in one batch met a transaction holding their rows in the other order; the batch
    is run again rather than answered 503."""
    storage = get_storage(patient_app)
    engine = storage.engine
    repeats = [Callback(kind="message-status", body=b"{}", query="", content_type="", dedup_key=key)
               for key in ("a|delivered|t", "b|delivered|t")]
    first, second = (storage.inbox.record(callback).id for callback in repeats)
    committer = GroupCommitter(engine, timeout=10)  # its batch is run directly, in a thread of the test
    recorded = crossed(engine, first, second,
                       lambda: committer._store([event_values(callback) for callback in repeats]))  # one batch
    committer._drop_connection()
    assert [(r.id, r.deliveries) for r in recorded] == [(first, 2), (second, 2)]


def test_the_multipart_sweep_skips_a_group_being_joined_and_puts_back_an_open_one(pg_app, sender, storage, engine):
    """The sweep locks the timed-out groups before it puts a part back: a group a worker is joining
    now (row locked) is left to it, where an unlocked read could later put back a part whose group
    another worker had meanwhile joined and dispatched."""
    for text, ref in (("aaa|bbb", "11"), ("xxx|yyy", "22")):
        sender.sms("inbound-sms", samples.inbound_sms_parts(text, 2, concat_ref=ref)[0])
    Worker(storage, pg_app.config, name="w").run_until_idle()  # each part stored, waiting for the other
    later = time.time() + pg_app.config["CONCAT_TIMEOUT_SECONDS"] + 1
    with engine.connect() as other:
        other.execute(sqlalchemy.text(
            "SELECT group_key FROM sms_groups WHERE group_key LIKE '%|11' FOR UPDATE"))  # being joined
        assert storage.inbox.requeue_expired_parts(pg_app.config["CONCAT_TIMEOUT_SECONDS"], later) == 1
        other.rollback()
    assert storage.inbox.requeue_expired_parts(pg_app.config["CONCAT_TIMEOUT_SECONDS"], later) == 1
    assert count_states(engine) == {"pending": 2}


@pytest.mark.slow
def test_workers_joining_parts_of_the_same_groups_both_apply_them(patient_app, monkeypatch):
    """Each of two workers holds one part of each of two multipart SMS, whose message ids sort the
    groups in opposite orders: applied in message-id order they locked the groups crosswise, and
    the deadlock gave one worker's whole batch back."""
    from receiver.storage import multipart
    from receiver.worker.loop import parse_stored

    sender, storage = Vonage(patient_app.test_client()), get_storage(patient_app)

    first = samples.inbound_sms_parts("aaa bbb ccc", 3, msisdn="447700900001", concat_ref="11")
    second = samples.inbound_sms_parts("xxx yyy zzz", 3, msisdn="447700900002", concat_ref="22")
    sender.sms("inbound-sms", dict(first[0], messageId="0A000002"))
    sender.sms("inbound-sms", dict(second[0], messageId="0A000001"))
    x_rows = storage.inbox.claim("x", 300, 10)
    sender.sms("inbound-sms", dict(first[1], messageId="0B000001"))
    sender.sms("inbound-sms", dict(second[1], messageId="0B000002"))
    y_rows = storage.inbox.claim("y", 300, 10)
    assert len(x_rows) == len(y_rows) == 2

    collect, both_hold_one = multipart.collect, threading.Barrier(2)
    paused = threading.local()

    def collect_then_wait(conn, event, timeout, now=None):
        joined = collect(conn, event, timeout, now)
        if not getattr(paused, "done", False):
            paused.done = True
            try:
                both_hold_one.wait(2)  # both workers hold a group now, or one waits for the other's
            except threading.BrokenBarrierError:
                pass
        return joined

    monkeypatch.setattr(multipart, "collect", collect_then_wait)
    results = {}

    def apply(name, rows):
        try:
            results[name] = [a.note for a in storage.inbox.apply([(row, parse_stored(row)) for row in rows], 600)]
        except Exception as exc:  # noqa: BLE001 - the failure this test looks for
            results[name] = exc

    threads = [threading.Thread(target=apply, args=(name, rows)) for name, rows in (("x", x_rows), ("y", y_rows))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(isinstance(notes, list) and len(notes) == 2 for notes in results.values()), results
