"""The console's queries: the feed in keyset pages, one message's timeline and conversation, problem
events, and the last callback per sender (the operator's group replay is events.replay over
PROBLEM_STATES).

All are reads on a connection of their own (`engine.connect()`), never in the SQLite writer's turn.
Every query is bounded by an index or by a window of ids: none counts or sorts the whole events
table (bench/README.md lists the indexes each page relies on).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import custom_op

from receiver.platform.formats import stored_object
from receiver.storage.schema import events, message_history, messages, outbox, traffic
from receiver.storage.stats import STATES

FEED_PAGE = 50
# A filter on a column without an index (kind, channel, status, api key, application, state done)
# looks through at most this many events per page, newest first; "older" carries the search on.
SCAN_WINDOW = 10_000
# States that hold few events: the (state, available_at) index finds them, sorted by id afterwards.
FEW_STATES = tuple(state for state in STATES if state != "done")
PROBLEM_STATES = ("failed", "dead", "invalid")
SEARCH_MESSAGES = 200  # messages a client_ref or phone number search takes, newest first
CONVERSATION = 20  # messages of a conversation shown
_PHONE = re.compile(r"\+?[\d\s().-]{6,}")

FEED_COLUMNS = (
    events.c.id, events.c.kind, events.c.state, events.c.message_id, events.c.status, events.c.channel,
    events.c.api_key, events.c.application_id, events.c.received_at, events.c.deliveries, events.c.attempts,
    messages.c.direction, messages.c.to_number, messages.c.from_number, messages.c.client_ref,
    messages.c.message_type, messages.c.text,
)


@dataclass(frozen=True)
class Filters:
    """What the feed shows: each field None for any; `q` a message id, client_ref or phone number."""

    kind: str | None = None
    channel: str | None = None
    status: str | None = None
    state: str | None = None
    api_key: str | None = None
    application_id: str | None = None
    q: str | None = None

    def columns(self) -> dict:
        return {name: getattr(self, name) for name in ("kind", "channel", "status", "api_key", "application_id")
                if getattr(self, name)}


@dataclass(frozen=True)
class FeedPage:
    rows: list  # newest first
    older: int | None  # the `before` of the next page; None at the end
    window_ended: bool  # the scan window ran out before the page filled: `older` searches on
    more_newer: bool = False  # `after` pages: more events arrived than the page holds


def feed(engine: Engine, filters: Filters, *, before: int | None = None, after: int | None = None,
         limit: int = FEED_PAGE) -> FeedPage:
    """One page of stored events, newest first, below `before` (older pages) or above `after` (live updates)."""
    with engine.connect() as conn:
        conditions = [_plain(conn, events.c[name]) == value for name, value in filters.columns().items()]
        if before is not None:
            conditions.append(events.c.id < before)
        if after is not None:
            conditions.append(events.c.id > after)
        window_low, window_full = None, False
        if filters.q:
            ids = _search(conn, filters.q)
            if not ids:
                return FeedPage([], None, False)
            conditions.append(events.c.message_id.in_(ids))
        elif filters.state in FEW_STATES:
            conditions.append(events.c.state == filters.state)
        elif filters.state or filters.columns():
            if filters.state:
                conditions.append(_plain(conn, events.c.state) == filters.state)
            window_low, window_full = _window(conn, before, after)
            if window_low is None:
                return FeedPage([], None, False)
            conditions.append(events.c.id >= window_low)
        stmt = (select(*FEED_COLUMNS)
                .select_from(events.outerjoin(messages, messages.c.message_id == events.c.message_id))
                .where(*conditions).order_by(events.c.id.desc()).limit(limit + 1))
        rows = conn.execute(stmt).all()
    if after is not None:
        return FeedPage(rows[:limit], None, False, more_newer=len(rows) > limit or window_full)
    if len(rows) > limit:
        return FeedPage(rows[:limit], rows[limit - 1].id, False)
    if window_full:
        return FeedPage(rows, window_low, True)
    return FeedPage(rows, None, False)


def _plain(conn: Connection, column):
    """`column` as SQLite's planner will not use an index for (SQLite's unary +; plain elsewhere).

    Without statistics SQLite takes any equality on an indexed column for a few rows: `kind = ?`
    would walk the (kind, dedup_key) index and sort every event of that kind, `state = 'done'`
    nearly the whole table, where the id range of the page is what bounds the work.
    """
    return UnaryExpression(column, operator=custom_op("+")) if conn.dialect.name == "sqlite" else column


def _window(conn: Connection, before: int | None, after: int | None) -> tuple[int | None, bool]:
    """The lowest id of the newest SCAN_WINDOW events in range, and whether the window was full."""
    newest = select(events.c.id).order_by(events.c.id.desc()).limit(SCAN_WINDOW)
    if before is not None:
        newest = newest.where(events.c.id < before)
    if after is not None:
        newest = newest.where(events.c.id > after)
    sub = newest.subquery()
    low, count = conn.execute(select(func.min(sub.c.id), func.count())).one()
    return low, count >= SCAN_WINDOW


def _search(conn: Connection, q: str) -> list[str]:
    """Message ids that `q` names: itself, and the newest messages with that client_ref or number."""
    q = q.strip()
    values = {q}
    if _PHONE.fullmatch(q):
        values.add(re.sub(r"\D", "", q))  # Vonage writes numbers as bare digits: 447700900123
    found = [q]
    for column in (messages.c.client_ref, messages.c.to_number, messages.c.from_number):
        stmt = (select(messages.c.message_id).where(column.in_(values))
                .order_by(messages.c.created_at.desc()).limit(SEARCH_MESSAGES))
        found += conn.execute(stmt).scalars()
    return list(dict.fromkeys(found))[:SEARCH_MESSAGES + 1]


@dataclass(frozen=True)
class Timeline:
    message: object  # the messages row
    history: list  # message_history rows, in the order they were recorded
    events: list  # this message's stored events (id, kind, status, state, received_at, body), oldest first
    conversation: list  # messages between the same two numbers, newest first (this one included)
    conversation_statuses: list  # status events of the conversation's outbound messages (for workflows)
    sent_texts: dict  # message_uuid -> the text we sent, for the conversation's messages that are ours


def timeline(engine: Engine, message_id: str) -> Timeline | None:
    """Everything the message page shows; None for an unknown message."""
    with engine.connect() as conn:
        message = conn.execute(select(messages).where(messages.c.message_id == message_id)).first()
        if message is None:
            return None
        history = conn.execute(select(message_history).where(message_history.c.message_id == message_id)
                               .order_by(message_history.c.id)).all()
        own = conn.execute(_event_bodies([message_id])).all()
        conversation = _conversation(conn, message)
        outbound = [m.message_id for m in conversation if m.direction == "outbound"]
        # The statuses alone, filtered in SQL; `+kind` on SQLite, so that the message_id index bounds the work.
        of_status = _plain(conn, events.c.kind) == "message-status"
        statuses = conn.execute(_event_bodies(outbound).where(of_status)).all() if outbound else []
        # A status callback carries no text: what we sent is in the outbox's request.
        sent = conn.execute(select(outbox.c.message_uuid, outbox.c.request)
                            .where(outbox.c.message_uuid.in_(outbound))).all() if outbound else []
    return Timeline(message, history, own, conversation, statuses, {row.message_uuid: _sent_text(row.request)
                                                                     for row in sent})


def _sent_text(request: str) -> str | None:
    body = stored_object(request)
    text = body.get("text")
    return text if isinstance(text, str) else None


def _event_bodies(message_ids: list[str]):
    return (select(events.c.id, events.c.kind, events.c.status, events.c.state, events.c.message_id,
                   events.c.received_at, events.c.body)
            .where(events.c.message_id.in_(message_ids)).order_by(events.c.id))


def _conversation(conn: Connection, message) -> list:
    """The newest messages between this message's two numbers, both directions.

    Looked up by the customer's number alone (one index each way), since our own number is on
    every message; the pair is checked here.
    """
    customer, us = ((message.to_number, message.from_number) if message.direction == "outbound"
                    else (message.from_number, message.to_number))
    if not customer:
        return [message]
    found = []
    for theirs, ours in ((messages.c.to_number, messages.c.from_number),
                         (messages.c.from_number, messages.c.to_number)):
        rows = conn.execute(select(messages).where(theirs == customer)
                            .order_by(messages.c.created_at.desc()).limit(CONVERSATION)).all()
        found += [row for row in rows if getattr(row, ours.name) == us]
    found.sort(key=lambda row: row.created_at, reverse=True)
    return found[:CONVERSATION]


def problem_events(engine: Engine, limit: int) -> list:
    """The newest failed, dead and invalid events, with what went wrong."""
    stmt = (select(events.c.id, events.c.kind, events.c.state, events.c.status, events.c.message_id,
                   events.c.attempts, events.c.available_at, events.c.received_at, events.c.last_error)
            .where(events.c.state.in_(PROBLEM_STATES)).order_by(events.c.id.desc()).limit(limit))
    with engine.connect() as conn:
        return conn.execute(stmt).all()


def senders(engine: Engine, since_minute: int) -> list[dict]:
    """Per (api_key, application_id) with traffic from `since_minute` on: callbacks answered, the last one."""
    stmt = (select(traffic.c.api_key, traffic.c.application_id, func.sum(traffic.c.count).label("count"),
                   func.max(traffic.c.last_at).label("last_at"))
            .where(traffic.c.minute >= since_minute).group_by(traffic.c.api_key, traffic.c.application_id))
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(stmt).mappings()]
