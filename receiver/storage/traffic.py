"""The per-minute traffic rows: each web process overwrites its own; readers add them up."""
from __future__ import annotations

import json

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from receiver.storage.engines import insert_for, write_transaction
from receiver.storage.schema import traffic


def save(engine: Engine, process: str, rows: list[dict]) -> None:
    """Write this process's counts for some minutes (each row: minute, api_key, application_id,
    outcome, count, last_at, latency as a list), replacing what it wrote before for them."""
    if not rows:
        return
    insert = insert_for(engine)(traffic)
    values = [{**row, "process": process, "latency": json.dumps(row["latency"])} for row in rows]
    stmt = insert.values(values).on_conflict_do_update(
        index_elements=[traffic.c.minute, traffic.c.process, traffic.c.api_key, traffic.c.application_id,
                        traffic.c.outcome],
        set_={"count": insert.excluded.count, "last_at": insert.excluded.last_at, "latency": insert.excluded.latency},
    )
    with write_transaction(engine) as conn:
        conn.execute(stmt)


def since(engine: Engine, minute: int) -> list[dict]:
    """Every row from `minute` on, all processes, latency decoded."""
    with engine.connect() as conn:
        rows = conn.execute(select(traffic).where(traffic.c.minute >= minute)).mappings().all()
    return [{**row, "latency": json.loads(row["latency"])} for row in rows]


def prune(engine: Engine, before_minute: int) -> int:
    with write_transaction(engine) as conn:
        return conn.execute(delete(traffic).where(traffic.c.minute < before_minute)).rowcount
