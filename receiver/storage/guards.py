"""What may leave, decided as a message is queued and again as it is claimed: a recipient on the suppression
list gets nothing (`suppressed`), and a handler's message over a loop guard is kept back (`held`) until an
operator releases it. Reads the outbox and the list in the caller's transaction; never sends.

The guards, in order: the opt-out confirmation always goes (it is the answer to STOP); a suppressed recipient
gets nothing; a message with `once_every` (the shipped auto-reply) goes to one number at most once in that
many seconds; a handler's messages go to one number at most `per_minute` times a minute (REPLY_MAX_PER_MINUTE).
"""
from __future__ import annotations

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Connection

from receiver.storage import suppressions
from receiver.storage.schema import outbox
from receiver.storage.schema import suppressions as suppression_list

EXEMPT = "opt-out-reply"  # the purpose of the one message a number that just opted out still gets
NOT_SENT = ("held", "suppressed")  # rows that count toward no cap: they never left


def admit(conn: Connection, row: dict, *, per_minute: int, once_every: float | None, now: float) -> dict:
    """`row` (an outbox row about to be inserted) as the guards leave it: queued, held or suppressed, with why."""
    if row.get("purpose") == EXEMPT:
        return row
    since = suppressions.find(conn, row["to_number"])
    if since is not None:
        return {**row, "state": "suppressed",
                "last_error": f"not sent: {row['to_number']} opted out ({since['reason']}, {since['created_at']})"}
    if once_every and _recent(conn, row, now - once_every, purpose=row.get("purpose")):
        return {**row, "state": "held",
                "last_error": f"held: a {row.get('purpose') or 'message'} already went to {row['to_number']} in the "
                              f"last {once_every:g} s (AUTO_REPLY_INTERVAL_SECONDS); release it to send it anyway"}
    if row.get("event_id") is not None and per_minute > 0 and _recent(conn, row, now - 60.0) >= per_minute:
        return {**row, "state": "held",
                "last_error": f"held: {per_minute} messages from handlers already went to {row['to_number']} in the "
                              "last minute (REPLY_MAX_PER_MINUTE); release it to send it anyway"}
    return row


def _recent(conn: Connection, row: dict, since: float, *, purpose: str | None = None) -> int:
    """How many messages to this row's recipient (from handlers, or of this purpose) were queued since `since`."""
    query = select(func.count()).select_from(outbox).where(
        outbox.c.recipient == row["recipient"], outbox.c.created_at >= since, outbox.c.state.not_in(NOT_SENT))
    query = query.where(outbox.c.purpose == purpose) if purpose else query.where(outbox.c.event_id.is_not(None))
    return conn.execute(query).scalar() or 0


def suppress_due(conn: Connection, now: float) -> int:
    """At claim time: due messages whose recipient opted out since they were queued become `suppressed`."""
    return conn.execute(
        update(outbox)
        .where(outbox.c.state.in_(("queued", "unknown")), outbox.c.available_at <= now,
               outbox.c.recipient.in_(select(suppression_list.c.recipient)),
               or_(outbox.c.purpose.is_(None), outbox.c.purpose != EXEMPT))
        .values(state="suppressed", last_error="not sent: the recipient opted out before it left", updated_at=now)
    ).rowcount
