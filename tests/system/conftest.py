"""Fixtures of the whole-system tests: the processes a test starts, and the databases they share."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from app import create_app
from receiver.storage import get_storage, metadata
from receiver.storage.engines import make_engine
from tests.conftest import base_config
from tests.recording_app import create_test_tables, dispatch_log, effects
from tests.stack import Stack


@pytest.fixture
def stack(tmp_path):
    started = Stack(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def pg_url(pg_database, tmp_path):
    """The session's throwaway PostgreSQL database, with every table present and empty."""
    config = dict(base_config(pg_database, tmp_path / "instance"), LOG_LEVEL="WARNING")
    app = create_app(config)  # building the app makes its tables
    engine = get_storage(app).engine
    create_test_tables(engine)
    names = ", ".join([t.name for t in metadata.sorted_tables] + [dispatch_log.name, effects.name])
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    engine.dispose()
    get_storage(app).dispose()
    return pg_database


@pytest.fixture
def database(request):
    """The database URL for a test parametrized indirectly with "sqlite" or "postgres"."""
    return request.getfixturevalue({"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param])


@pytest.fixture
def engine_for():
    """An engine the test reads the database with (same settings as the app's), disposed at the end."""
    made = []

    def make(url: str):
        made.append(make_engine(url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()
