"""Storage: the only door to the database. Nothing outside this package writes SQL or opens a transaction.

A `Storage` holds the engines and five repositories (storage.repositories): `inbox` (the request path's
`record`; the worker's `claim`, `apply`, `finish`, `release`, `heartbeat`), `outbox`, `reads`,
`stats` and `sessions`. Two engines: one whose commits wait for the disk (callbacks, operator actions), one for the
worker's bookkeeping that need not. Every database failure reaches callers as StorageUnavailable.
"""
from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from receiver.platform.config import ConfigError
from receiver.storage import migrate
from receiver.storage.claims import Outcome
from receiver.storage.engines import database_url, make_engine, unreachable_reason
from receiver.storage.events import Callback, Recorded
from receiver.storage.lookups import Reads, Sessions, Statistics
from receiver.storage.reconcile import Applied
from receiver.storage.repositories import Inbox, Outbox, StorageUnavailable
from receiver.storage.schema import metadata
from receiver.storage.stats import Stats
from receiver.storage.suppressions import OptedOut

__all__ = ["Applied", "Callback", "OptedOut", "Outcome", "Recorded", "Stats", "Storage", "StorageUnavailable", "get_storage",
           "init_app", "metadata", "unreachable_reason"]

log = logging.getLogger("receiver.storage")


class Storage:
    """The database of one app: its engines and its repositories."""

    def __init__(self, url: str, timeout: float, rejections_kept: int = 1000, reply_cap: int = 10):
        self.url = url
        self.engine = make_engine(url, timeout)
        self.bookkeeping = make_engine(url, timeout, durable=False)
        self.inbox = Inbox(self.engine, self.bookkeeping, timeout, rejections_kept, reply_cap)
        self.outbox = Outbox(self.engine)
        self.reads = Reads(self.engine, self.inbox)
        self.stats = Statistics(self.engine)
        self.sessions = Sessions(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def where(self) -> str:
        """The database, as it can be shown (no password)."""
        return self.engine.url.render_as_string(hide_password=True)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (see storage.migrate).

        :raises StorageUnavailable: the database cannot be reached or used (its cause says how).
        """
        try:
            migrate.upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise StorageUnavailable(str(exc).splitlines()[0][:300]) from exc

    def revisions(self) -> tuple[str | None, str]:
        """(the database's schema revision, the one this code needs)."""
        return migrate.current_revision(self.engine), migrate.head_revision()

    def missing_tables(self) -> list[str]:
        from sqlalchemy import inspect

        return sorted(set(metadata.tables) - set(inspect(self.engine).get_table_names()))

    def unreachable_reason(self) -> str | None:
        """None when the database answers, else why not."""
        return unreachable_reason(self.engine)

    def dispose(self) -> None:
        self.inbox.stop()
        self.engine.dispose()
        self.bookkeeping.dispose()


def init_app(app: Flask) -> None:
    """Open this app's storage and bring the schema up to date (migrations/versions/).

    :raises ConfigError: a DATABASE_URL that names no database this code can open, or a SQLite
        folder that cannot be created.
    """
    setting = database_setting(app.config)
    url = database_url(app.config.get("DATABASE_URL"), app.instance_path)
    try:
        storage = Storage(url, app.config["DATABASE_TIMEOUT_SECONDS"], app.config["REJECTIONS_KEPT"],
                          app.config["REPLY_MAX_PER_MINUTE"])
    except (ArgumentError, NoSuchModuleError, ImportError):
        # Not shown: a URL that does not parse may still hold a password.
        raise ConfigError("DATABASE_URL is not a database URL this app can use: postgresql://user:password@host/name "
                          "or sqlite:////absolute/path.sqlite3") from None
    except OSError as exc:  # the SQLite file's folder cannot be created
        raise ConfigError(f"{setting}: cannot create the folder {exc.filename} for the SQLite file "
                          f"({exc.strerror})") from None
    try:
        migrate.upgrade(storage.engine)
    except OperationalError as exc:
        # A web process restarted during a database outage must still come up and answer 503
        # until the database is back; the release step (`flask init-db`) fails loudly instead.
        # A database that answered and refused (no such database or role, a wrong password) is no
        # outage: waiting would only answer every callback 503, so the start stops here.
        if _refused_by_the_database(exc):
            storage.dispose()
            raise ConfigError(start_failure(storage, setting, exc)) from None
        log.warning("database unreachable at start, schema not checked: %s", start_failure(storage, setting, exc))
    app.extensions["storage"] = storage


# What PostgreSQL says when it answered and refused us: a setting to fix, not an outage to wait out.
REFUSALS = ("does not exist", "password authentication failed", "no pg_hba.conf entry", "authentication failed")


def _refused_by_the_database(exc: BaseException) -> bool:
    reason = str(getattr(exc, "orig", None) or exc)
    return any(words in reason for words in REFUSALS)


def database_setting(config) -> str:
    """The setting a user changes to fix the database: DATABASE_URL, or INSTANCE_PATH for the default SQLite file."""
    return "DATABASE_URL" if config.get("DATABASE_URL") else "INSTANCE_PATH"


def start_failure(storage: Storage, setting: str, exc: BaseException) -> str:
    """One line on why the database failed: the setting, the database (no password) and the driver's own
    words, e.g. `DATABASE_URL (postgresql+psycopg://app:***@db/orders): database "orders" does not exist`."""
    reason = str(getattr(exc, "orig", None) or exc).strip()
    # psycopg: 'connection failed: connection to server at "h", port 5432 failed: FATAL:  <the reason>'
    reason = (reason.rsplit("FATAL:", 1)[-1] if "FATAL:" in reason else reason).strip().splitlines()[0]
    password = storage.engine.url.password
    if password:
        reason = reason.replace(str(password), "***")
    return f"{setting} ({storage.where()}): {reason}"


def get_storage(app: Flask) -> Storage:
    return app.extensions["storage"]
