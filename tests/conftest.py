"""Shared fixtures: an app on a real SQLite file (or PostgreSQL), its client and CLI runner, and
`vonage`, which signs and sends callbacks exactly as Vonage does."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlencode

import pytest
import sqlalchemy
from hypothesis import settings

import handlers
from app import create_app
from receiver.storage import engines, get_storage, migrate, unreachable_reason
from receiver.storage.schema import events
from receiver.webhooks.signatures import sign_jwt, sign_sms
from receiver.worker.loop import Worker

SECRET = "test-signature-secret-Yq9vD3kE7pL2sX8w"
API_KEY = "a1b2c3d4"
SMS_METHOD = "sha256"
ADMIN_TOKEN = "test-admin-token-Kq3Zx8Vw2Lm9"  # a token production accepts: 24+ characters, 10+ different
PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# Property-based tests take their example counts from a hypothesis profile: the default one in the full
# run, "quick" (a fifth as many) when HYPOTHESIS_PROFILE=quick, which `python3 dev.py test --quick` sets.
settings.register_profile("quick", max_examples=20)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def examples(full: int) -> int:
    """A property's example count: `full` under the default profile (100 examples), scaled with the profile
    loaded (a fifth under "quick")."""
    return max(1, full * settings.default.max_examples // 100)


PATHS = {
    "message-status": "/webhooks/message-status",
    "inbound-message": "/webhooks/inbound-message",
    "inbound-sms": "/webhooks/inbound-sms",
    "delivery-receipt": "/webhooks/delivery-receipt",
}


def base_config(database_url: str, instance_path) -> dict:
    return {
        "TESTING": True,
        "INSTANCE_PATH": str(instance_path),
        "DATABASE_URL": database_url,
        "VONAGE_SIGNATURE_SECRET": SECRET,
        "VONAGE_SIGNATURE_METHOD": SMS_METHOD,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "WORKER_IN_WEB": False,  # tests drive the worker themselves, deterministically
        "RETRY_BASE_SECONDS": 0.0,
        "DATABASE_TIMEOUT_SECONDS": 1.0,
    }


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A SQLite file an app migrated to head once per session, closed: each test's own file starts as a copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "receiver.sqlite3"
    app = create_app(base_config(f"sqlite:///{path}", path.parent / "instance"))
    app.extensions["traffic"].stop()
    get_storage(app).dispose()  # the last connection closed: the WAL is checkpointed into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture
def make_app(tmp_path, sqlite_template):
    """Build apps on this test's own SQLite file (a copy of the session's migrated template, made when the
    first app is built); extra settings override the defaults."""
    built = []
    own = tmp_path / "receiver.sqlite3"

    def factory(**overrides):
        config = base_config(f"sqlite:///{own}", tmp_path / "instance")
        config.update(overrides)
        if config["DATABASE_URL"] == f"sqlite:///{own}" and not own.exists():
            shutil.copyfile(sqlite_template, own)
        app = create_app(config)
        built.append(app)
        return app

    yield factory
    for app in built:
        app.extensions["traffic"].stop()
        get_storage(app).dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    """A SQLite file of this test's own (not yet created)."""
    return f"sqlite:///{tmp_path / 'receiver.sqlite3'}"


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def storage(app):
    return get_storage(app)


@pytest.fixture
def engine(storage):
    """The app's durable engine, for tests that read tables directly."""
    return storage.engine


@pytest.fixture
def work(app):
    """Run the worker until nothing is due; returns how many events it processed."""

    def run(name: str = "test-worker") -> int:
        return Worker(get_storage(app), app.config, name=name).run_until_idle()

    return run


@pytest.fixture
def calls(monkeypatch):
    """Replace every handler with one that records (handler name, event)."""
    seen = []

    def recorder(name):
        return lambda event: seen.append((name, event))

    for status in list(handlers.STATUS_HANDLERS):
        monkeypatch.setitem(handlers.STATUS_HANDLERS, status, recorder(status))
    monkeypatch.setattr(handlers, "DEFAULT_STATUS_HANDLER", recorder("default-status"))
    for message_type in list(handlers.INBOUND_HANDLERS):
        monkeypatch.setitem(handlers.INBOUND_HANDLERS, message_type, recorder(f"inbound-{message_type}"))
    monkeypatch.setattr(handlers, "DEFAULT_INBOUND_HANDLER", recorder("default-inbound"))
    return seen


def count_states(engine) -> dict[str, int]:
    """How many stored events are in each state (states with none left out), read straight from the table."""
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.select(events.c.state, sqlalchemy.func.count()).group_by(events.c.state))
        return dict(rows.all())


def compact(payload) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class Vonage:
    """Sends callbacks to the app the way Vonage does: signed JWT for Messages, `sig` for SMS API."""

    def __init__(self, client, secret: str = SECRET, api_key: str = API_KEY, method: str = SMS_METHOD):
        self.client, self.secret, self.api_key, self.method = client, secret, api_key, method

    def messages(self, kind: str, payload, *, body: bytes | None = None, token: str | None = None, headers=None):
        body = compact(payload) if body is None else body
        token = sign_jwt(body, self.secret, api_key=self.api_key) if token is None else token
        all_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        all_headers.update(headers or {})
        return self.client.post(PATHS[kind], data=body, headers=all_headers)

    def status(self, payload, **kw):
        return self.messages("message-status", payload, **kw)

    def inbound(self, payload, **kw):
        return self.messages("inbound-message", payload, **kw)

    def sms(self, kind: str, params: dict, *, via: str = "GET", sign: bool = True):
        params = dict(params, **{"api-key": params.get("api-key", self.api_key)})
        if sign:
            params = sign_sms(params, self.secret, self.method, nonce=str(uuid.uuid4()))
        path = PATHS[kind]
        if via == "GET":
            return self.client.get(path + "?" + urlencode(params))
        if via == "form":
            return self.client.post(path, data=urlencode(params), content_type="application/x-www-form-urlencoded")
        return self.client.post(path, data=compact(params), content_type="application/json")


@pytest.fixture
def operator(client):
    """The test client, logged in to the console through its form."""
    from tests.console_client import login  # it imports this module's constants

    assert login(client).status_code == 302
    return client


@pytest.fixture
def vonage(client):
    return Vonage(client)


def postgres_reachable(url: str = PG_URL) -> str | None:
    """None when PostgreSQL answers at `url`, else the reason it does not."""
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 2})
    try:
        reason = unreachable_reason(engine)
    finally:
        engine.dispose()
    return None if reason is None else f"PostgreSQL not reachable at {url}: {reason}"


# -- PostgreSQL -------------------------------------------------------------------------------------
# Every database this suite makes is named receiver_<kind>_<pid>_<unix time>_<random>: nothing is ever
# created in the server's own database (PG_URL's, `test` by default), and a later session can tell
# what a session killed before its teardown left behind (its pid gone, an hour old) from a live one's.
DATABASE_NAME = re.compile(r"^receiver_(?:template|test)_(\d+)_(\d+)_[0-9a-f]{8}$")
LEFTOVER_SECONDS = 3600


def database_name(kind: str) -> str:
    return f"receiver_{kind}_{os.getpid()}_{int(time.time())}_{uuid.uuid4().hex[:8]}"


def database_url_of(name: str) -> str:
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def drop_database(admin, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def drop_leftovers(admin) -> list[str]:
    """Drop the databases of earlier sessions of this machine that were killed before their teardown."""
    if sqlalchemy.engine.make_url(PG_URL).host not in ("127.0.0.1", "localhost", "::1", None):
        return []  # another machine's pids mean nothing here
    with admin.connect() as conn:
        names = list(conn.execute(sqlalchemy.text("SELECT datname FROM pg_database")).scalars())
    dropped = []
    for name in names:
        found = DATABASE_NAME.match(name)
        if found and not _running(int(found[1])) and time.time() - int(found[2]) > LEFTOVER_SECONDS:
            drop_database(admin, name)
            dropped.append(name)
    return dropped


@pytest.fixture(scope="session")
def pg_server():
    """The PostgreSQL server at TEST_POSTGRES_URL, as an AUTOCOMMIT engine on its own database, which
    nothing here writes to. Skipped with the reason when it does not answer (failed under REQUIRE_POSTGRES)."""
    reason = postgres_reachable()
    if reason:
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail(reason + " (REQUIRE_POSTGRES is set)")
        pytest.skip(reason)
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        drop_leftovers(admin)
        yield admin
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_server):
    """A database migrated to head once per session, then closed to connections: each test that needs a
    database of its own gets a copy of it (CREATE DATABASE ... TEMPLATE), instead of migrating one."""
    name = database_name("template")
    with pg_server.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        engine = engines.make_engine(database_url_of(name))
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        with pg_server.connect() as conn:  # a template being copied must have no session open on it
            conn.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
        yield name
    finally:
        drop_database(pg_server, name)


@contextmanager
def pg_database_of_its_own(admin, template: str | None = None):
    """A new database (a copy of `template`, else empty), dropped when the block ends however it ends."""
    name = database_name("test")
    copy = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield database_url_of(name)
    finally:
        drop_database(admin, name)


@pytest.fixture
def empty_pg_url(pg_server):
    """An empty PostgreSQL database of this test's own: no schema (for the migrations' tests)."""
    with pg_database_of_its_own(pg_server) as url:
        yield url


@pytest.fixture
def migrated_pg_url(pg_server, pg_template):
    """A PostgreSQL database of this test's own, a copy of the session's template: schema at head, tables empty."""
    with pg_database_of_its_own(pg_server, pg_template) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """A database of this test's own to build apps on: a SQLite file (which make_app starts as a copy of the
    session's template), then a PostgreSQL copy of the template."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'receiver.sqlite3'}"
    return request.getfixturevalue("migrated_pg_url")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request, tmp_path):
    """An empty database of this test's own, with no schema: a SQLite file, then an empty PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'receiver.sqlite3'}"
    return request.getfixturevalue("empty_pg_url")


@pytest.fixture
def pg_app(migrated_pg_url, tmp_path):
    """An app on a PostgreSQL database of this test's own, its tables empty."""
    app = create_app(base_config(migrated_pg_url, tmp_path / "instance"))
    yield app
    app.extensions["traffic"].stop()
    get_storage(app).dispose()
