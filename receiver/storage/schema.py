"""The tables. A change here is also a new revision in migrations/versions/, never an edit to an old one.

Column sizes are limits the worker checks before it writes (storage.state.unfit): a value that does
not fit keeps its event `invalid` with the reason, it is never truncated.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_Id = BigInteger().with_variant(Integer, "sqlite")

# One row per callback Vonage delivered (a repeat of the same natural key only bumps `deliveries`).
events = Table(
    "events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("dedup_key", String(512), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("query", Text, nullable=False, default=""),
    Column("content_type", String(255), nullable=False, default=""),
    Column("headers", Text, nullable=False, default="{}"),
    Column("message_id", String(255)),
    Column("status", String(64)),
    # Who and what, read on the request path, so the console filters without parsing bodies.
    Column("channel", String(32)),
    Column("api_key", String(64)),  # whose signature secret verified it
    Column("application_id", String(64)),  # Messages API: the token's application_id claim
    Column("received_at", Double, nullable=False),
    Column("last_delivery_at", Double, nullable=False),
    Column("deliveries", Integer, nullable=False, default=1),
    # pending -> processing -> done | failed (retry later) | dead | invalid
    Column("state", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("available_at", Double, nullable=False),
    Column("lease_until", Double),
    Column("claimed_by", String(255)),
    Column("processed_at", Double),
    Column("last_error", Text),
    Column("note", Text),  # what the worker did without dispatching, e.g. "part 1/3 of a multipart SMS"
    UniqueConstraint("kind", "dedup_key", name="uq_events_kind_dedup_key"),
    Index("ix_events_state_available_at", "state", "available_at"),
    Index("ix_events_message_id", "message_id"),
)

# One row per message (Messages message_uuid or SMS API messageId): its current status.
messages = Table(
    "messages",
    metadata,
    Column("message_id", String(255), primary_key=True),
    Column("direction", String(16), nullable=False),
    Column("channel", String(32)),
    Column("status", String(64)),
    Column("status_rank", Integer, nullable=False, default=0),
    Column("status_timestamp", String(64)),
    Column("to_number", String(255)),
    Column("from_number", String(255)),
    Column("client_ref", String(255)),
    Column("message_type", String(64)),
    Column("text", Text),
    Column("content", Text),
    Column("incomplete", Boolean, nullable=False, default=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Index("ix_messages_direction_created", "direction", "created_at"),
    Index("ix_messages_created", "created_at"),  # the API's newest-first list, without a direction
    # The console's search by client_ref or phone number, and a conversation's newest messages.
    Index("ix_messages_client_ref", "client_ref"),
    Index("ix_messages_to_created", "to_number", "created_at"),
    Index("ix_messages_from_created", "from_number", "created_at"),
)

# Every status ever reported for a message, applied or not, one row per stored event.
message_history = Table(
    "message_history",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("message_id", String(255), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("status", String(64), nullable=False),
    Column("timestamp", String(64)),
    Column("applied", Boolean, nullable=False),
    Column("error_code", String(64)),
    Column("recorded_at", Double, nullable=False),
    UniqueConstraint("message_id", "event_id", name="uq_history_message_event"),
)

# Parts of SMS API multipart messages, waiting to be joined.
sms_parts = Table(
    "sms_parts",
    metadata,
    Column("group_key", String(512), primary_key=True),
    Column("part", Integer, primary_key=True),
    Column("total", Integer, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("text", Text),
    Column("message_id", String(255)),
    Column("received_at", Double, nullable=False),
    Column("dispatched_by", BigInteger),  # the event whose dispatch included this part
)

sms_groups = Table(
    "sms_groups",
    metadata,
    Column("group_key", String(512), primary_key=True),
    Column("total", Integer, nullable=False),
    Column("first_seen", Double, nullable=False),
    Column("completed_by", BigInteger),  # the event that dispatches the joined message
    Column("incomplete", Boolean, nullable=False, default=False),
)

# Requests refused by signature verification (bounded; newest kept).
rejections = Table(
    "rejections",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),
    Column("path", String(255), nullable=False),
    Column("remote_addr", String(255)),
    Column("reason", String(64), nullable=False),
    Column("detail", Text),  # the first of them
    # The requests refused for this reason, from this address, to this path, in this second.
    Column("count", Integer, nullable=False, server_default="1"),
)

# Messages this app sends through the Messages API: written before anything goes on the wire, sent by
# the worker process's sender. A handler's sends are keyed by (event_id, position) so a re-dispatch
# queues nothing twice; sends from the API and the CLI have no event.
outbox = Table(
    "outbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", BigInteger),  # the event whose handler asked for it
    Column("position", Integer),  # its place among that handler's sends
    Column("channel", String(32), nullable=False),
    Column("to_number", String(255), nullable=False),
    Column("from_number", String(255), nullable=False),
    Column("client_ref", String(100), nullable=False),  # echoed in its status callbacks: how an unknown send is found
    Column("request", Text, nullable=False),  # the Messages API body, as JSON
    # queued -> sending -> sent | unknown (no answer: wait for a status with its client_ref) | failed;
    # held (over a loop guard: released by an operator) and suppressed (the recipient opted out) never leave
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("available_at", Double, nullable=False),
    Column("lease_until", Double),
    Column("claimed_by", String(255)),
    Column("message_uuid", String(255)),
    Column("last_error", Text),
    Column("problem", Text),  # Vonage's RFC 7807 problem details, as JSON, when it refused the message
    Column("status", String(64)),  # the latest status Vonage reported for it
    Column("created_at", Double, nullable=False),
    Column("sent_at", Double),
    Column("updated_at", Double, nullable=False),
    Column("recipient", String(255)),  # `to` as the suppression list and the caps know it (storage.suppressions)
    Column("purpose", String(32)),  # auto-reply, opt-out-reply, help-reply: a message the receiver queued itself
    UniqueConstraint("event_id", "position", name="uq_outbox_event_position"),
    Index("ix_outbox_state_available_at", "state", "available_at"),
    Index("ix_outbox_message_uuid", "message_uuid"),
    Index("ix_outbox_client_ref", "client_ref"),
    Index("ix_outbox_recipient_created", "recipient", "created_at"),  # the caps: what went to one number lately
    Index("ix_outbox_state_status_sent", "state", "status", "sent_at"),  # the watchdog: sent, and silent since
)

# Numbers that opted out (STOP, or a rejection saying so): nothing is sent to them on any channel until
# they opt in again (START) or an operator lifts it. Keyed by the number's digits.
suppressions = Table(
    "suppressions",
    metadata,
    Column("recipient", String(255), primary_key=True),
    Column("number", String(255), nullable=False),  # as it was written
    Column("reason", Text, nullable=False),
    Column("source", String(32), nullable=False),  # keyword, rejection, receipt, operator
    Column("event_id", BigInteger),  # the callback that said so
    Column("created_at", Double, nullable=False),
)

# Callbacks answered, per minute, web process, sender and outcome: what the console shows of the
# account's callback queue. Each process overwrites its own rows with its counts so far.
traffic = Table(
    "traffic",
    metadata,
    Column("minute", BigInteger, primary_key=True),  # epoch seconds // 60
    Column("process", String(255), primary_key=True),
    Column("api_key", String(64), primary_key=True),  # "" when unknown (a forgery names none we trust)
    Column("application_id", String(64), primary_key=True),  # "" for SMS API callbacks
    Column("outcome", String(16), primary_key=True),  # stored, duplicate, rejected, unavailable, bad_request, probe
    Column("count", Integer, nullable=False),
    Column("last_at", Double, nullable=False),
    Column("latency", Text, nullable=False),  # JSON: how many answers fell in each of traffic.BUCKETS_MS
)

# Each worker loop writes here so operators can see it is alive.
workers = Table(
    "workers",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("seen_at", Double, nullable=False),
    Column("processed", BigInteger, nullable=False, default=0),
    Column("progress_at", Double),  # when this worker last finished an event
)

# One row per console session (receiver.operator.console.sessions). The cookie holds the session id;
# only its SHA-256 is kept, so a copy of the database opens no console.
operator_sessions = Table(
    "operator_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("token_mark", String(64), nullable=False),  # which ADMIN_TOKEN it was opened with (a keyed hash)
    Column("created_at", Double, nullable=False),
    Column("seen_at", Double, nullable=False),
)
