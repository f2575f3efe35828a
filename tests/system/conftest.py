"""Fixtures of the whole-system tests: the processes a test starts, their databases, and engines to read them."""
from __future__ import annotations

import pytest

from receiver.storage.engines import make_engine
from tests.recording_app import create_test_tables
from tests.stack import Stack


@pytest.fixture
def stack(tmp_path):
    started = Stack(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def pg_url(migrated_pg_url):
    """A PostgreSQL database of this test's own: the app's tables (a copy of the session's template) and the
    recording app's, all empty."""
    engine = make_engine(migrated_pg_url)
    try:
        create_test_tables(engine)
    finally:
        engine.dispose()
    return migrated_pg_url


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
