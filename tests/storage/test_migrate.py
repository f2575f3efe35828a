"""Schema migrations: a fresh database ends at head with receiver/storage/schema.py's schema."""
import subprocess
import sys
import time

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event

from receiver.storage import engines, migrate, schema
from tests.servers import ROOT


@pytest.fixture
def database(empty_database_url):
    engine = engines.make_engine(empty_database_url)
    yield engine
    engine.dispose()


def schema_differences(engine) -> list:
    """What autogenerate would change to make the database match schema.metadata ([] when they agree)."""
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), schema.metadata)


def count_workers(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(schema.workers)).scalar_one()


def add_worker_row(engine) -> None:
    with engine.begin() as conn:
        conn.execute(schema.workers.insert().values(name="before", seen_at=1.0, processed=3))


def test_upgrade_creates_the_schema_db_py_defines(database):
    migrate.upgrade(database)
    assert schema_differences(database) == []


def test_current_revision_is_none_before_and_head_after(database):
    assert migrate.current_revision(database) is None
    migrate.upgrade(database)
    assert migrate.current_revision(database) == migrate.head_revision()


def test_second_upgrade_changes_nothing(database):
    migrate.upgrade(database)
    add_worker_row(database)
    statements = []
    event.listen(database, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql))

    migrate.upgrade(database)

    writes = [s for s in statements if s.lstrip().split()[0].upper() not in ("SELECT", "PRAGMA")]
    assert writes == []
    assert count_workers(database) == 1


@pytest.mark.slow
def test_processes_starting_together_all_succeed(empty_database_url):
    # Each process waits for the same moment, then upgrades: they contend for the lock, not for CPU at import.
    # A generous busy timeout: on a loaded machine the first process's WAL switch and migration can
    # outlast the default 5 s (the app itself logs that and starts anyway; this test wants all four to migrate).
    code = (
        "import sys, time; from receiver.storage import engines, migrate; engine = engines.make_engine(sys.argv[1], 30); "
        "time.sleep(max(0, float(sys.argv[2]) - time.time())); migrate.upgrade(engine); engine.dispose()"
    )
    start = str(time.time() + 2.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_database_url, start], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = []
    try:
        for p in procs:
            _, errors = p.communicate(timeout=60)
            results.append((p.returncode, errors))
    finally:
        for p in procs[len(results):]:  # one that hung, and those after it: killed, not left to the next test
            p.kill()
            p.communicate(timeout=10)

    assert results == [(0, "")] * 4
    engine = engines.make_engine(empty_database_url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
