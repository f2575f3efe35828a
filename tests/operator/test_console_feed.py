"""The feed: newest first in keyset pages (?before=id), filters, search by message id, client_ref or
number, the live fragment, and the bounded window for filters on columns without an index."""
import pytest
from sqlalchemy import update

from devkit import samples
from receiver.kinds import KINDS
from receiver.storage import console, get_storage
from receiver.storage.console import PROBLEM_STATES, Filters
from receiver.storage.events import record_event
from receiver.storage.schema import events
from receiver.webhooks.payloads import callback
from tests.conftest import compact


def store(storage, kind="message-status", payload=None, *, api_key="a1b2c3d4", application_id=None, **fields):
    """Store one callback as the request path would, without HTTP; returns its event id."""
    payload = payload or samples.message_status(fields.pop("status", "delivered"), fields.pop("channel", "sms"), **fields)
    found = callback(KINDS[kind], payload, body=compact(payload), query="", content_type="application/json", headers={},
                     api_key=api_key, application_id=application_id)
    return record_event(storage.engine, found).id


def ids(page):
    return [row.id for row in page.rows]


@pytest.fixture
def feed_db(database_url, make_app):
    """Storage on SQLite, then on PostgreSQL."""
    return get_storage(make_app(DATABASE_URL=database_url))


def test_pages_go_back_by_id_newest_first(feed_db):
    stored = [store(feed_db) for _ in range(12)]
    first = feed_db.reads.feed(Filters(), limit=5)
    second = feed_db.reads.feed(Filters(), before=first.older, limit=5)
    third = feed_db.reads.feed(Filters(), before=second.older, limit=5)
    assert ids(first) + ids(second) + ids(third) == stored[::-1]
    assert third.older is None and not third.window_ended


def test_an_event_stored_while_paging_does_not_shift_the_pages(feed_db):
    stored = [store(feed_db) for _ in range(6)]
    first = feed_db.reads.feed(Filters(), limit=3)
    store(feed_db)
    assert ids(feed_db.reads.feed(Filters(), before=first.older, limit=3)) == stored[2::-1]


def test_the_live_fragment_has_only_what_is_newer(feed_db):
    old = store(feed_db)
    new = [store(feed_db) for _ in range(3)]
    page = feed_db.reads.feed(Filters(), after=old)
    assert ids(page) == new[::-1] and not page.more_newer
    assert feed_db.reads.feed(Filters(), after=old, limit=2).more_newer


def test_filters_on_indexed_and_plain_columns(feed_db):
    sms = store(feed_db, status="delivered", channel="sms")
    whatsapp = store(feed_db, status="read", channel="whatsapp", application_id="app-1")
    inbound = store(feed_db, "inbound-message", samples.inbound_message("viber_service"), api_key="other-key")
    assert ids(feed_db.reads.feed(Filters(kind="message-status"))) == [whatsapp, sms]
    assert ids(feed_db.reads.feed(Filters(channel="viber_service"))) == [inbound]
    assert ids(feed_db.reads.feed(Filters(status="read"))) == [whatsapp]
    assert ids(feed_db.reads.feed(Filters(api_key="other-key"))) == [inbound]
    assert ids(feed_db.reads.feed(Filters(application_id="app-1"))) == [whatsapp]
    assert ids(feed_db.reads.feed(Filters(state="pending", kind="message-status"))) == [whatsapp, sms]
    assert ids(feed_db.reads.feed(Filters(state="done"))) == []


def test_a_filter_without_an_index_looks_through_a_bounded_window(feed_db, monkeypatch):
    monkeypatch.setattr(console, "SCAN_WINDOW", 4)
    rare = store(feed_db, channel="rcs")
    for _ in range(6):
        store(feed_db, channel="sms")
    page = feed_db.reads.feed(Filters(channel="rcs"))
    assert ids(page) == [] and page.window_ended  # the newest 4 hold no rcs: say so, and go on from there
    assert ids(feed_db.reads.feed(Filters(channel="rcs"), before=page.older)) == [rare]


def test_search_by_message_id_client_ref_and_number(app, vonage, work, storage):
    outbound = samples.message_status("delivered", "whatsapp", client_ref="order-48213", to="447700900777")
    vonage.status(outbound)
    vonage.inbound(samples.inbound_message("whatsapp", from_="447700900777"))
    vonage.status(samples.message_status("delivered", "whatsapp", to="447700900111"))
    work()
    assert ids(storage.reads.feed(Filters(q=outbound["message_uuid"]))) == [1]
    assert ids(storage.reads.feed(Filters(q="order-48213"))) == [1]
    assert ids(storage.reads.feed(Filters(q="+44 7700 900777"))) == [2, 1]
    assert ids(storage.reads.feed(Filters(q="nothing-like-it"))) == []


def test_the_feed_page_and_its_older_link(operator, storage):
    stored = [store(storage) for _ in range(console.FEED_PAGE + 5)]
    html = operator.get("/ui/").get_data(as_text=True)
    assert f'data-newest="{stored[-1]}"' in html and f'data-id="{stored[5]}"' in html
    assert f'data-id="{stored[4]}"' not in html
    older = operator.get(f"/ui/?before={stored[5]}").get_data(as_text=True)
    assert f'data-id="{stored[4]}"' in older and "data-poll" not in older  # an older page does not update live
    assert "« newest" in older


def test_the_fragment_keeps_the_filters(operator, storage):
    store(storage, channel="sms")
    whatsapp = store(storage, channel="whatsapp")
    html = operator.get("/ui/feed/rows?after=0&channel=whatsapp").get_data(as_text=True)
    assert html.count("<tr data-id=") == 1 and f'data-id="{whatsapp}"' in html


def test_stored_text_is_escaped_in_the_feed(operator, vonage, work):
    vonage.inbound(samples.inbound_message("sms", text='<script>window.__pwned=1</script><img src=x onerror="x()">'))
    work()
    html = operator.get("/ui/").get_data(as_text=True)
    assert "<script>window" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html


def test_problem_reads_and_group_replay_on_both_databases(feed_db):
    stored = [store(feed_db) for _ in range(4)]
    with feed_db.engine.begin() as conn:
        for event_id, state in zip(stored, ("dead", "invalid", "failed", "done")):
            conn.execute(update(events).where(events.c.id == event_id).values(state=state, last_error="x"))
    assert [row.id for row in feed_db.reads.problem_events(10)] == stored[2::-1]
    assert feed_db.stats.queue_figures().by_state == {"pending": 0, "processing": 0, "failed": 1, "dead": 1, "invalid": 1}
    assert feed_db.inbox.replay(stored, PROBLEM_STATES) == 3  # the done one is left alone
    assert feed_db.stats.queue_figures().by_state["pending"] == 3
