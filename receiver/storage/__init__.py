"""Storage: the only door to the database. Nothing outside this package writes SQL or opens a transaction.

The request path calls `record`; the worker `claim`, `apply`, `finish`, `release`, `heartbeat`;
the API, the CLI, metrics and doctor `stats` and a few reads. Two engines: one whose commits wait
for the disk (callbacks, operator actions), one for the worker's bookkeeping that need not.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from dataclasses import dataclass

from flask import Flask
from sqlalchemy.exc import ArgumentError, DataError, IntegrityError, NoSuchModuleError, OperationalError

from receiver.platform.config import ConfigError
from receiver.platform.formats import safe_text
from receiver.storage import claims, console, events, migrate, multipart, outbox, rejections, state, stats, traffic
from receiver.storage.claims import Outcome
from receiver.storage.engines import (
    database_url,
    make_engine,
    run_again_if_it_loses_a_race,
    unavailable,
    unreachable_reason,
    write_transaction,
)
from receiver.storage.events import Recorded
from receiver.storage.groupcommit import GroupCommitter
from receiver.storage.schema import metadata
from receiver.storage.stats import Stats
from receiver.webhooks.payloads import Callback
from schemas import Event

__all__ = ["Applied", "Outcome", "Recorded", "Stats", "Storage", "get_storage", "init_app", "metadata",
           "unreachable_reason"]

log = logging.getLogger("receiver.storage")

APPLY_CHUNK = 10  # events whose message state is written in one transaction


def _lock_order(event: Event) -> str:
    """What applying this event locks first: its multipart group's row, or its message's."""
    info = multipart.part_info(event) if event.source == "sms-api" else None
    return "g:" + info[0] if info else "m:" + (event.message_id or "")


@dataclass(frozen=True)
class Applied:
    """One parsed event after its message state was written: what to dispatch, or why nothing yet."""

    row: object  # the claimed row
    event: Event | None  # the event to dispatch (a multipart SMS: the joined message); None with note or error
    note: str | None = None  # nothing to dispatch yet, e.g. a multipart part waiting for the rest
    error: str | None = None  # the traceback of a bug that kept it from being applied
    invalid: dict | None = None  # field -> reasons its values cannot be stored (never cut to fit)


class Storage:
    """The database of one app: engines, the group committer, and the verbs."""

    def __init__(self, url: str, timeout: float, rejections_kept: int = 1000):
        self.url = url
        self.engine = make_engine(url, timeout)
        self.bookkeeping = make_engine(url, timeout, durable=False)
        self._committer = GroupCommitter(self.engine, timeout)
        self._rejections = rejections.RejectionLog(self.bookkeeping, rejections_kept)
        self._stats_lock = threading.Lock()
        self._recent: tuple[float, Stats | None] = (0.0, None)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def where(self) -> str:
        """The database, as it can be shown (no password)."""
        return self.engine.url.render_as_string(hide_password=True)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (see storage.migrate)."""
        migrate.upgrade(self.engine)

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
        self._rejections.stop()
        self.engine.dispose()
        self.bookkeeping.dispose()

    # -- the request path ----------------------------------------------------------------------
    def record(self, callback: Callback) -> Recorded:
        """Store one callback durably (sharing the commit with concurrent requests); returns once on disk.

        :raises sqlalchemy.exc.SQLAlchemyError: when the database could not take it.
        """
        return self._committer.record(callback)

    def record_rejection(self, *, path: str, remote_addr: str | None, reason: str, detail: str) -> None:
        """Count one signature rejection, written with the others of its second (see storage.rejections).
        No I/O; never raises."""
        self._rejections.note(path=path, remote_addr=remote_addr, reason=reason, detail=detail)

    # -- the worker path -----------------------------------------------------------------------
    def claim(self, worker: str, lease_seconds: float, limit: int) -> list:
        """Claim up to `limit` of the oldest due events for this worker alone, oldest first."""
        return claims.claim_batch(self.bookkeeping, worker, lease_seconds, limit)

    def apply(self, parsed: list[tuple[object, Event]], concat_timeout: float) -> list[Applied]:
        """Write the message state of each (row, event), APPLY_CHUNK events per transaction; one Applied
        each, in the order given. An event whose values do not fit the columns, or that the database
        refuses, or that meets a bug, holds back that event alone.

        :raises sqlalchemy.exc.SQLAlchemyError: when the database itself fails (nothing is lost: the
            claims are given back, or their leases run out, and the events are claimed again).
        """
        applied: dict[int, Applied] = {}
        fit = []
        for row, event in parsed:
            problems = state.unfit(event)
            if problems:
                applied[row.id] = Applied(row, None, invalid=problems)
            else:
                fit.append((row, event))
        # Rows locked in one order by every worker (a multipart part locks its group first, any
        # other event its message): two batches on PostgreSQL do not deadlock.
        fit.sort(key=lambda pair: (_lock_order(pair[1]), pair[0].id))
        # A Messages API status can only be about a message of ours if the outbox held it before Vonage
        # reported on it: with an empty outbox now, no status of this batch is, and none needs looking up.
        about_sends = any(e.kind == "status" and e.source != "sms-api" for _, e in fit)
        ours = outbox.used(self.bookkeeping) if about_sends else False
        for start in range(0, len(fit), APPLY_CHUNK):
            chunk = fit[start:start + APPLY_CHUNK]
            try:
                applied.update(run_again_if_it_loses_a_race(lambda: self._apply_chunk(chunk, concat_timeout, ours)))
            except Exception as exc:
                if unavailable(exc):
                    raise
                # One transaction each, so the others of the chunk still go through.
                for row, event in chunk:
                    applied[row.id] = self._apply_alone(row, event, concat_timeout, ours)
        return [applied[row.id] for row, _ in parsed]

    def _apply_chunk(self, chunk: list, concat_timeout: float, ours: bool) -> dict[int, Applied]:
        with write_transaction(self.bookkeeping) as conn:
            return {row.id: self._apply_one(conn, row, event, concat_timeout, ours) for row, event in chunk}

    def _apply_alone(self, row, event: Event, concat_timeout: float, ours: bool) -> Applied:
        try:
            with write_transaction(self.bookkeeping) as conn:
                return self._apply_one(conn, row, event, concat_timeout, ours)
        except Exception as exc:
            if unavailable(exc):
                raise
            if isinstance(exc, (DataError, IntegrityError)):  # the database refuses these values
                reason = f"{exc.__class__.__name__}: {getattr(exc, 'orig', exc)}".splitlines()[0]
                return Applied(row, None, invalid={"_database": [safe_text(reason, 500)]})
            return Applied(row, None, error=safe_text(traceback.format_exc(limit=20)))

    @staticmethod
    def _apply_one(conn, row, event: Event, concat_timeout: float, ours: bool) -> Applied:
        if event.kind == "status":
            status = state.record_status(conn, event)  # the message's, ranked
            # The outbox sends through the Messages API: an SMS API receipt is never about one of its messages.
            sent = outbox.attach_status(conn, event.message_id, event.client_ref, status or event.status,
                                        time.time()) if ours and event.source != "sms-api" else None
            return Applied(row, dataclasses.replace(event, superseded=status != event.status, outbox_id=sent))
        info = multipart.part_info(event) if event.source == "sms-api" else None
        if info:
            joined = multipart.collect(conn, event, concat_timeout)
            if joined is None:
                _, part, total = info
                return Applied(row, None, note=f"part {part}/{total} of a multipart SMS stored; waiting for the rest")
            event = joined
        state.record_inbound(conn, event)
        return Applied(row, event)

    def finish(self, worker: str, outcomes: list[Outcome]) -> int:
        """Record how each claimed event ended, in one transaction; how many were settled.

        An outcome the database refuses is written alone, and failing that as `invalid` with why:
        one event's outcome never keeps the others from being recorded.
        """
        if not outcomes:
            return 0
        try:
            # A deadlock with another writer (a repeat delivery being counted) rolls the settle back:
            # these events are still this worker's claims, and giving them back instead would
            # dispatch them a second time.
            return run_again_if_it_loses_a_race(lambda: claims.settle(self.bookkeeping, worker, outcomes))
        except Exception as exc:
            if unavailable(exc):
                raise
        return sum(self._finish_alone(worker, outcome) for outcome in outcomes)

    def _finish_alone(self, worker: str, outcome: Outcome) -> int:
        try:
            return claims.settle(self.bookkeeping, worker, [outcome])
        except Exception as exc:
            if unavailable(exc):
                raise
            log.error("the outcome of event %s could not be stored (%s); keeping it as invalid",
                      outcome.event_id, exc.__class__.__name__)
            plain = Outcome(outcome.event_id, "invalid", error=f"its outcome could not be stored: {exc.__class__.__name__}")
            return claims.settle(self.bookkeeping, worker, [plain])

    def release(self, worker: str, event_ids: list[int]) -> int:
        """Give back claimed events this worker will not process: due again at once, attempt uncounted."""
        return claims.release(self.bookkeeping, worker, event_ids)

    def heartbeat(self, worker: str, processed: int, progress_at: float | None = None, *, held=(),
                  lease_seconds: float = 0.0, now: float | None = None) -> None:
        """Record that this worker is alive, and renew the leases of the events it holds."""
        now = time.time() if now is None else now
        with write_transaction(self.bookkeeping) as conn:
            stats.beat(conn, worker, now, processed, progress_at)
            claims.renew(conn, worker, list(held), now + lease_seconds)

    def claim_holders(self) -> list[str]:
        """The names of the workers that hold claims now."""
        return claims.claim_holders(self.bookkeeping)

    def take_back(self, worker_names: list[str]) -> int:
        """Make what these dead workers had claimed due again now."""
        return claims.take_back(self.bookkeeping, worker_names)

    def requeue_expired_parts(self, timeout: float, now: float | None = None) -> int:
        """Put one part of each timed-out multipart SMS back in the queue, to dispatch what arrived."""
        return multipart.requeue_expired(self.bookkeeping, timeout, now)

    def prune(self, older_than_seconds: float, now: float | None = None) -> dict[str, int]:
        """Delete finished (done, invalid) events older than the cutoff, with old rejections and joined parts."""
        return events.prune(self.engine, older_than_seconds, now)

    # -- the operator ----------------------------------------------------------------------------
    def replay(self, event_id: int) -> bool:
        """Put a finished, failed, dead or invalid event back to pending with a fresh attempt count."""
        return events.replay(self.engine, [event_id]) == 1

    def event(self, event_id: int) -> dict | None:
        return events.get_event(self.engine, event_id)

    def stored(self, event_id: int):
        """The stored row of one event, the request as received (body bytes, query, headers); None if unknown."""
        return events.stored_row(self.engine, event_id)

    def events(self, *, kind=None, state=None, message_id=None, limit: int = 50) -> list[dict]:
        return events.list_events(self.engine, kind=kind, state=state, message_id=message_id, limit=limit)

    def message(self, message_id: str) -> dict | None:
        return state.get_message(self.engine, message_id)

    def messages(self, *, direction: str | None = None, limit: int = 50) -> list[dict]:
        return state.list_messages(self.engine, direction=direction, limit=limit)

    def rejections(self, limit: int = 100) -> list[dict]:
        """The newest rejection rows (each counts the requests of one second, reason, address and path);
        this process's are written first."""
        self._rejections.flush()
        return rejections.recent(self.engine, limit)

    def rejections_by_reason(self, since: float) -> dict[str, int]:
        self._rejections.flush()
        return rejections.by_reason(self.engine, since)

    # -- the outbox --------------------------------------------------------------------------------
    def queue_send(self, body: dict) -> int:
        """Queue one validated Messages API body (the API and the CLI), durably; its outbox id."""
        return outbox.queue_one(self.engine, body)

    def claim_sends(self, sender: str, limit: int, wait_unknown: float) -> list:
        """Claim due messages to send (durably, before any leaves); stalled sends become unknown."""
        return outbox.claim(self.engine, sender, limit, wait_unknown)

    def record_send(self, message_id: int, sender: str, **values) -> bool:
        """Write how one send went (state, message_uuid, last_error, problem ...), durably."""
        return outbox.record(self.engine, message_id, sender, **values)

    def outbox_message(self, message_id: int) -> dict | None:
        return outbox.get(self.engine, message_id)

    def outbox_messages(self, *, state: str | None = None, limit: int = 50) -> list[dict]:
        return outbox.listed(self.engine, state=state, limit=limit)

    def sent_as(self, message_uuid: str) -> dict | None:
        """The outbox message Vonage knows by this message_uuid, if it is one of ours."""
        return outbox.find(self.engine, message_uuid)

    def live_workers(self) -> int:
        return stats.live(self.engine)

    def save_traffic(self, process: str, rows: list[dict]) -> None:
        """Overwrite this process's per-minute answer counts (see receiver.operator.traffic)."""
        traffic.save(self.engine, process, rows)

    def traffic_since(self, since: float) -> list[dict]:
        """Every process's per-minute answer counts since `since` (epoch seconds)."""
        return traffic.since(self.engine, int(since // 60))

    def prune_traffic(self, before: float) -> int:
        return traffic.prune(self.engine, int(before // 60))

    def stats(self, now: float | None = None) -> Stats:
        """The queue's figures: counts by state, due backlog, oldest due, stuck claims, live workers."""
        return stats.collect(self.engine, now)

    def shared_stats(self) -> Stats:
        """`stats()`, one query at a time: callers that come while one runs share its answer. Probes and
        scrapes can come in floods (anyone may ask /readyz); this keeps them to one query in flight.

        :raises sqlalchemy.exc.SQLAlchemyError: when the database does not answer.
        """
        asked_at = time.monotonic()
        with self._stats_lock:
            finished_at, figures = self._recent
            if figures is not None and finished_at >= asked_at:  # answered while this call waited
                return figures
            figures = self.stats()
            self._recent = (time.monotonic(), figures)
            return figures

    # -- the console ---------------------------------------------------------------------------
    # Reads on their own connection (never the SQLite writer's turn), except the operator's replay.
    def feed(self, filters: console.Filters, *, before: int | None = None, after: int | None = None,
             limit: int = console.FEED_PAGE) -> console.FeedPage:
        """A keyset page of events, newest first, below `before` or (live updates) above `after`."""
        return console.feed(self.engine, filters, before=before, after=after, limit=limit)

    def timeline(self, message_id: str) -> console.Timeline | None:
        """One message: its state, status history, events and conversation; None when unknown."""
        return console.timeline(self.engine, message_id)

    def problem_events(self, limit: int) -> list:
        """The newest failed, dead and invalid events with their errors."""
        return console.problem_events(self.engine, limit)

    def queue_figures(self, now: float | None = None) -> Stats:
        """`stats()` for every page: the same figures without counting done events (by_state lacks `done`)."""
        return stats.collect(self.engine, now, console.FEW_STATES)

    def senders(self, since: float) -> list[dict]:
        """Per api_key and application_id: callbacks answered since `since` and when the last arrived."""
        return console.senders(self.engine, int(since // 60))

    def replay_events(self, event_ids: list[int]) -> int:
        """Put those of these events that are failed, dead or invalid back to pending; how many moved."""
        return events.replay(self.engine, event_ids, console.PROBLEM_STATES)
    # -- end of the console ----------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Open this app's storage and bring the schema up to date (migrations/versions/).

    :raises ConfigError: a DATABASE_URL that names no database this code can open, or a SQLite
        folder that cannot be created.
    """
    setting = database_setting(app.config)
    url = database_url(app.config.get("DATABASE_URL"), app.instance_path)
    try:
        storage = Storage(url, app.config["DATABASE_TIMEOUT_SECONDS"], app.config["REJECTIONS_KEPT"])
    except (ArgumentError, NoSuchModuleError, ImportError):
        # Not shown: a URL that does not parse may still hold a password.
        raise ConfigError("DATABASE_URL is not a database URL this app can use: postgresql://user:password@host/name "
                          "or sqlite:////absolute/path.sqlite3") from None
    except OSError as exc:  # the SQLite file's folder cannot be created
        raise ConfigError(f"{setting}: cannot create the folder {exc.filename} for the SQLite file "
                          f"({exc.strerror})") from None
    try:
        storage.migrate()
    except OperationalError as exc:
        # A web process restarted during a database outage must still come up and answer 503
        # until the database is back; the release step (`flask init-db`) fails loudly instead.
        log.warning("database unreachable at start, schema not checked: %s", start_failure(storage, setting, exc))
    app.extensions["storage"] = storage


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
