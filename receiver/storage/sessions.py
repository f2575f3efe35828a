"""The console's session rows: opened at login, touched as the operator works, deleted at logout or expiry.

Rows are keyed by a hash of the session id; nothing here knows what a cookie is.
"""
from __future__ import annotations

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import Engine

from receiver.storage.engines import write_transaction
from receiver.storage.schema import operator_sessions as table


def open_one(engine: Engine, id_hash: str, token_mark: str, now: float) -> None:
    """Store a new session, and drop those that no longer open anything (another token's)."""
    with write_transaction(engine) as conn:
        conn.execute(delete(table).where(table.c.token_mark != token_mark))
        conn.execute(insert(table).values(id_hash=id_hash, token_mark=token_mark, created_at=now, seen_at=now))


def find(engine: Engine, id_hash: str):
    """The session's row (token_mark, created_at, seen_at), or None."""
    with engine.connect() as conn:
        return conn.execute(select(table).where(table.c.id_hash == id_hash)).first()


def touch(engine: Engine, id_hash: str, now: float) -> None:
    with write_transaction(engine) as conn:
        conn.execute(update(table).where(table.c.id_hash == id_hash).values(seen_at=now))


def close(engine: Engine, id_hash: str) -> None:
    with write_transaction(engine) as conn:
        conn.execute(delete(table).where(table.c.id_hash == id_hash))


def prune(engine: Engine, *, opened_before: float, seen_before: float) -> int:
    """Delete the sessions that have expired, too old or idle too long."""
    with write_transaction(engine) as conn:
        return conn.execute(delete(table).where(or_(table.c.created_at < opened_before,
                                                    table.c.seen_at < seen_before))).rowcount
