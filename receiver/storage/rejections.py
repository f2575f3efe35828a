"""The bounded log of requests refused by signature verification: the newest `keep` are kept."""
from __future__ import annotations

import time

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine

from receiver.formats import iso
from receiver.storage.engines import write_transaction
from receiver.storage.schema import rejections


def record(engine: Engine, *, path: str, remote_addr: str | None, reason: str, detail: str, keep: int) -> None:
    """Keep one rejection; trim the oldest now and then, not on every insert.

    :raises sqlalchemy.exc.SQLAlchemyError: when the database cannot take the write.
    """
    with write_transaction(engine) as conn:
        new_id = conn.execute(
            rejections.insert()
            .values(at=time.time(), path=path[:255], remote_addr=remote_addr, reason=reason[:64], detail=detail[:500])
            .returning(rejections.c.id)
        ).scalar_one()
        if new_id % 50 == 0:
            conn.execute(delete(rejections).where(rejections.c.id <= new_id - keep))


def recent(engine: Engine, limit: int = 100) -> list[dict]:
    """Newest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(rejections).order_by(rejections.c.id.desc()).limit(limit)).all()
    return [
        {"at": iso(r.at), "path": r.path, "remote_addr": r.remote_addr, "reason": r.reason, "detail": r.detail}
        for r in rows
    ]


def by_reason(engine: Engine, since: float) -> dict[str, int]:
    """How many requests were refused for each reason since `since` (epoch seconds)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(rejections.c.reason, func.count()).where(rejections.c.at >= since).group_by(rejections.c.reason)
        ).all()
    return dict(rows)
