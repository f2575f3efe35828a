"""Group commit: concurrent callbacks share commits, each answered only once its own row is stored."""
import threading

import sqlalchemy
from sqlalchemy import select

from receiver.storage import events as stored
from receiver.storage import get_storage, migrate
from receiver.storage.engines import make_engine, write_transaction
from receiver.storage.groupcommit import GroupCommitter
from receiver.storage.schema import events
from receiver.webhooks.payloads import Callback
from tests.conftest import count_states


def cb(kind: str, key: str, body: bytes | None) -> Callback:
    return Callback(kind=kind, body=body, query="", content_type="", dedup_key=key)


def record(committer, i, results, key=None):
    results[i] = committer.record(cb("message-status", key or f"m{i}|delivered|t", b"{}"))


def run_concurrently(committer, n, key_of=lambda i: None):
    results = [None] * n
    threads = [threading.Thread(target=record, args=(committer, i, results, key_of(i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_concurrent_callbacks_share_commits_and_all_are_stored(app):
    engine = get_storage(app).engine
    committer = GroupCommitter(engine, timeout=5)
    results = run_concurrently(committer, 200)
    assert all(r is not None and not r.duplicate for r in results)
    assert len({r.id for r in results}) == 200
    assert count_states(engine) == {"pending": 200}
    assert committer.commits < 200, "concurrent callbacks should have been committed together"


def test_duplicates_in_one_batch_are_counted_once_stored(app):
    committer = GroupCommitter(get_storage(app).engine, timeout=5)
    results = run_concurrently(committer, 50, key_of=lambda i: f"k{i % 5}")
    assert len({r.id for r in results}) == 5
    assert sorted(r.deliveries for r in results if not r.duplicate) == [1] * 5
    assert sum(r.duplicate for r in results) == 45


def test_a_refused_callback_does_not_fail_the_others_in_its_batch(app):
    committer = GroupCommitter(get_storage(app).engine, timeout=5)
    outcomes = {}
    barrier = threading.Barrier(21)

    def send(i):
        barrier.wait()
        try:
            # body=None breaks the NOT NULL constraint: the database refuses this one callback.
            committer.record(cb("inbound-message", f"u{i}", None if i == 7 else b"{}"))
            outcomes[i] = "stored"
        except Exception as exc:
            outcomes[i] = exc.__class__.__name__

    threads = [threading.Thread(target=send, args=(i,)) for i in range(21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert outcomes.pop(7) == "IntegrityError"
    assert set(outcomes.values()) == {"stored"}


def test_committer_survives_fork_by_starting_a_new_thread(app):
    committer = GroupCommitter(get_storage(app).engine, timeout=5)
    committer.record(cb("message-status", "a", b"{}"))
    committer._pid = -1  # as seen from a forked child: the parent's thread does not exist there
    assert committer.record(cb("message-status", "b", b"{}")).deliveries == 1


def test_one_statement_stores_a_batch_with_repeats_in_it_and_before_it(database_url):
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    try:
        def values(key):
            return stored.event_values(Callback("delivery-receipt", b"", f"id={key}", "", key))

        with write_transaction(engine) as conn:
            (earlier,) = stored.insert_events(conn, [values("a")])
        with write_transaction(engine) as conn:
            results = stored.insert_events(conn, [values(k) for k in ("b", "a", "b", "c", "b")])
        assert [(r.deliveries, r.duplicate) for r in results] == [
            (1, False), (2, True), (2, True), (1, False), (3, True)]
        assert results[1].id == earlier.id and results[0].id == results[2].id == results[4].id
        assert len({results[0].id, results[1].id, results[3].id}) == 3
        with engine.connect() as conn:
            rows = dict(conn.execute(sqlalchemy.select(events.c.dedup_key, events.c.deliveries)).all())
        assert rows == {"a": 2, "b": 3, "c": 1}
    finally:
        engine.dispose()


def test_a_refused_callback_does_not_fail_the_others_of_its_commit(storage):
    """Values the database cannot take (here: lone surrogates the request path would never let
    through) in one group commit: the others are stored, and so is the poison, by its hash."""
    results, barrier = {}, threading.Barrier(30)

    def send(i):
        bad = i == 13
        found = Callback(kind="message-status", body=b'{"n":%d}' % i, query="", content_type="application/json",
                         dedup_key=f"k{i}\ud800" if bad else f"k{i}", message_id="m\ud800" if bad else f"m{i}")
        barrier.wait()
        try:
            results[i] = storage.inbox.record(found)
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            results[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(not isinstance(r, Exception) for r in results.values()), results
    with storage.engine.connect() as conn:
        poison = conn.execute(select(events).where(events.c.body == b'{"n":13}')).one()
    assert poison.dedup_key.startswith("sha256:") and poison.message_id is None
    assert count_states(storage.engine) == {"pending": 30}
