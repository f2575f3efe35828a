"""The storage's verbs, in five repositories: here the inbox (callbacks in, the worker's claims and
outcomes) and the outbox (messages to send); in receiver.storage.lookups the reads (what the API, the CLI
and the console show), the stats and the console's sessions.

Each verb runs its own short transaction (or shares the request path's group commit) and answers with
plain values or frozen records. Every database failure leaves here as StorageUnavailable, whatever the
driver said: callers never see SQLAlchemy.
"""
from __future__ import annotations

import functools
import logging
import time

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from receiver.storage import (
    claims,
    events,
    multipart,
    outbox,
    reconcile,
    rejections,
    stats,
    suppressions,
)
from receiver.storage.claims import Outcome
from receiver.storage.engines import run_again_if_it_loses_a_race, unavailable, write_transaction
from receiver.storage.events import Callback, Recorded
from receiver.storage.groupcommit import GroupCommitter
from receiver.storage.reconcile import Applied
from schemas import Event

log = logging.getLogger("receiver.storage")


class StorageUnavailable(Exception):
    """The database did not take a read or a write (down, locked, timed out, or it refused the statement)."""


def _doors(cls):
    """Every public method of `cls` answers StorageUnavailable for any database error."""
    for name, method in list(vars(cls).items()):
        if callable(method) and not name.startswith("_"):
            setattr(cls, name, _door(method))
    return cls


def _door(method):
    @functools.wraps(method)
    def guarded(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except SQLAlchemyError as exc:
            raise StorageUnavailable(f"{exc.__class__.__name__}: {exc}".splitlines()[0][:300]) from exc
    return guarded


@_doors
class Inbox:
    """Callbacks in: stored on the request path; claimed, reconciled and settled by the worker."""

    def __init__(self, engine: Engine, bookkeeping: Engine, timeout: float, rejections_kept: int,
                 reply_cap: int = 10):
        self.engine, self.bookkeeping = engine, bookkeeping
        self.reply_cap = reply_cap  # REPLY_MAX_PER_MINUTE: a handler's messages to one number a minute
        self._committer = GroupCommitter(engine, timeout)
        self._rejections = rejections.RejectionLog(bookkeeping, rejections_kept)

    def record(self, callback: Callback) -> Recorded:
        """Store one callback durably (sharing the commit with concurrent requests); returns once on disk."""
        return self._committer.record(callback)

    def record_rejection(self, *, path: str, remote_addr: str | None, reason: str, detail: str) -> None:
        """Count one signature rejection, written with the others of its second (see storage.rejections)."""
        self._rejections.note(path=path, remote_addr=remote_addr, reason=reason, detail=detail)

    def flush_rejections(self) -> None:
        self._rejections.flush()

    def claim(self, worker: str, lease_seconds: float, limit: int) -> list:
        """Claim up to `limit` of the oldest due events for this worker alone, oldest first."""
        return claims.claim_batch(self.bookkeeping, worker, lease_seconds, limit)

    def apply(self, parsed: list[tuple[object, Event]], concat_timeout: float, consent=None) -> list[Applied]:
        """Reconcile each claimed (row, event) with the stored message state (storage.reconcile); `consent(event)`
        says what an event does to the suppression list (receiver.sending.consent)."""
        return reconcile.apply(self.bookkeeping, parsed, concat_timeout, consent, self.reply_cap)

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
            return run_again_if_it_loses_a_race(lambda: claims.settle(self.bookkeeping, worker, outcomes, self.reply_cap))
        except Exception as exc:
            if unavailable(exc):
                raise
        return sum(self._finish_alone(worker, outcome) for outcome in outcomes)

    def _finish_alone(self, worker: str, outcome: Outcome) -> int:
        try:
            return claims.settle(self.bookkeeping, worker, [outcome], self.reply_cap)
        except Exception as exc:
            if unavailable(exc):
                raise
            log.error("the outcome of event %s could not be stored (%s); keeping it as invalid",
                      outcome.event_id, exc.__class__.__name__)
            plain = Outcome(outcome.event_id, "invalid",
                            error=f"its outcome could not be stored: {exc.__class__.__name__}")
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

    def replay(self, event_ids: list[int], states: tuple[str, ...] = events.REPLAYABLE_STATES) -> int:
        """Put those of these events that are in `states` back to pending with a fresh attempt count."""
        return events.replay(self.engine, event_ids, states)

    def stop(self) -> None:
        self._rejections.stop()


@_doors
class Outbox:
    """Messages to send: queued durably before anything goes on the wire, claimed and recorded by the sender."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def queue(self, body: dict) -> int:
        """Queue one validated Messages API body (the API and the CLI), durably; its outbox id."""
        return outbox.queue_one(self.engine, body)

    def claim(self, sender: str, limit: int, wait_unknown: float, lease_seconds: float = 60.0) -> list:
        """Claim due messages to send (durably, before any leaves); stalled sends become unknown."""
        return outbox.claim(self.engine, sender, limit, wait_unknown, lease_seconds=lease_seconds)

    def record(self, message_id: int, sender: str, **values) -> bool:
        """Write how one send went (state, message_uuid, last_error, problem ...), durably."""
        return outbox.record(self.engine, message_id, sender, **values)

    def get(self, message_id: int) -> dict | None:
        return outbox.get(self.engine, message_id)

    def listed(self, *, state: str | None = None, limit: int = 50) -> list[dict]:
        return outbox.listed(self.engine, state=state, limit=limit)

    def sent_as(self, message_uuid: str) -> dict | None:
        """The outbox message Vonage knows by this message_uuid, if it is one of ours."""
        return outbox.find(self.engine, message_uuid)

    def release(self, message_id: int) -> bool:
        """Send a held message after all (the loop guards passed over; the suppression list still applies)."""
        return outbox.release(self.engine, message_id)

    def silent(self, deadlines: dict[str, float], limit: int = 100) -> tuple[int, list[dict]]:
        """Sent messages with no final status past their channel's deadline: how many, and the oldest few."""
        return outbox.silent(self.engine, deadlines, limit)

    def suppressed(self, limit: int = 1000) -> list[dict]:
        """The suppression list, newest first."""
        return suppressions.listed(self.engine, limit)

    def suppress(self, number: str, reason: str = "added by an operator") -> bool:
        """Put a number on the suppression list; True when it was not on it."""
        return suppressions.suppress(self.engine, number, reason)

    def lift(self, number: str) -> bool:
        """Take a number off the suppression list; True when it was on it."""
        return suppressions.lift(self.engine, number)
