"""The worker path: claim stored callbacks, parse, reconcile message state, dispatch each in the order
received, finish.

Every step that touches one stored callback ends in that event's own outcome (`invalid`, `failed`,
`dead` or `done`): nothing a callback contains reaches the loop. Only the database being down
leaves this module, and then nothing is lost: the claims are given back or their leases run out.
How the loop is run (a thread of the web process, or `flask worker`) is receiver.worker.supervisor's job.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import threading
import time
import traceback

from receiver.kinds import KINDS
from receiver.operator import metrics, traffic
from receiver.platform.formats import safe_text
from receiver.sending import consent as sending_consent
from receiver.storage import Outcome, Storage
from receiver.webhooks.payloads import MAX_DEPTH, UNVERIFIED, DuplicateParameter, depth
from receiver.worker import dispatch
from receiver.worker import policy as policy_module
from receiver.worker.policy import Policy
from schemas import Event, InvalidPayload, load_event

log = logging.getLogger("receiver.worker")



def parse_stored(row) -> Event:
    """The stored callback as an Event.

    :raises InvalidPayload: when it does not fit its schema, whatever is wrong with it.
    """
    try:
        payload = KINDS[row.kind].transport.read(row.query, row.body, row.content_type)
    except DuplicateParameter as exc:
        raise InvalidPayload({str(exc)[:100]: ["parameter appears more than once"]}) from None
    if payload is None:
        raise InvalidPayload({"_body": ["body is not a JSON object (or not strict JSON: NaN, 1e400)"]})
    # Only a body with more brackets than MAX_DEPTH can nest deeper: the count is cheap, the walk is not.
    if row.body.count(b"[") + row.body.count(b"{") > MAX_DEPTH and depth(payload) > MAX_DEPTH:
        raise InvalidPayload({"_body": [f"nested deeper than {MAX_DEPTH} levels"]})
    # A test mark (flask vonage trigger, doctor) is the app's own only where a signature covered it.
    signed = f'"{UNVERIFIED}"' not in row.headers or UNVERIFIED not in json.loads(row.headers)  # cheap test first
    return load_event(row.kind, payload, event_id=row.id, signed=signed)


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: base, 2*base, 4*base ... capped."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    return delay * random.uniform(0.8, 1.0)


def this_machine() -> str:
    """Where a process id names one process: the host name, with the pid namespace when there is one.
    Containers that share a host name (host networking, a fixed `hostname:`) but not their pids must
    not take each other's live workers for dead predecessors."""
    try:
        return f"{socket.gethostname()}~{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # not Linux, or no /proc
        return socket.gethostname()


class Worker:
    """One worker: `run_once()` claims and processes a batch; receiver.worker.supervisor loops it."""

    def __init__(self, storage: Storage, config: dict, name: str | None = None, *, beside_requests: bool = False,
                 policy: Policy | None = None):
        self.storage = storage
        self.config = config
        self.name = name or f"{this_machine()}:{os.getpid()}:{threading.get_ident()}"
        self.beside_requests = beside_requests  # a thread of a web process, sharing its GIL
        self.processed = 0
        self.progress_at: float | None = None  # when an event last finished
        self.held: set[int] = set()  # claimed and not settled yet: the heartbeat renews their leases
        self.hard_stop = False  # a second signal: stop now, even inside a handler
        self.wake_sender = lambda: None  # set by the supervisor: a handler queued messages
        self.policy = policy or policy_module.POLICY
        self.stopped = threading.Event()  # set by stop(): every thread of this worker ends when it is
        self._wake = threading.Event()
        self.batch_size = self.policy.max_batch  # the size of the next claim
        self._last_sweep = self._last_prune = 0.0

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopped.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    def notify(self) -> None:
        """A new callback was stored: look for work now instead of at the next poll."""
        self._wake.set()

    def wait(self, seconds: float) -> None:
        """Sleep until there may be work (or the worker is told to stop)."""
        self._wake.wait(seconds)
        self._wake.clear()

    # -- one batch -----------------------------------------------------------------------------
    def run_until_idle(self, max_events: int = 10_000) -> int:
        """Process every event that is due now; return how many were processed (tests, CLI)."""
        count = 0
        while count < max_events and not self.stopping:
            done = self.run_once(limit=max_events - count)
            if not done:
                break
            count += done
        return count

    def step(self) -> float:
        """One turn of the loop: a batch and the housekeeping; how long to wait before the next turn (while
        nothing was due, the wait for a notify or the poll is done here).

        :raises receiver.storage.StorageUnavailable: the database failed; what was claimed is given back.
        """
        worked = self.run_once()
        self.housekeeping()
        if not worked:
            self.wait(self.config["WORKER_POLL_SECONDS"])
            return 0.0
        # Callbacks are trickling in: let a few gather rather than claim each one alone.
        return self.policy.gather_seconds if worked < self.batch_size else 0.0

    def run_once(self, limit: int | None = None) -> int:
        """Claim a batch of due events and process it; how many were processed (0: none was due).

        :raises receiver.storage.StorageUnavailable: the database failed; what was claimed is given back.
        """
        size = self.batch_size if limit is None else min(self.batch_size, limit)
        rows = self.storage.inbox.claim(self.name, self.config["LEASE_SECONDS"], size)
        if not rows:
            return 0
        self.held.update(row.id for row in rows)
        started = time.monotonic()
        try:
            done = self.process_batch(rows)
        finally:
            self.give_back([row.id for row in rows if row.id in self.held])
        self.processed += done
        self.batch_size = self.policy.next_batch((time.monotonic() - started) / max(1, done))
        return done

    def process_batch(self, rows: list) -> int:
        """Parse, reconcile, dispatch and finish claimed events, oldest first; how many were processed.

        Outcomes are written a few at a time (Policy.settle_now). Events left when the worker is told to stop
        (or the batch runs long) are given back.
        """
        outcomes: list[Outcome] = []
        parsed = []
        for row in rows:
            event = self._parse(row)
            if isinstance(event, Outcome):
                outcomes.append(event)
            else:
                parsed.append((row, event))
        ready = []
        consent = functools.partial(sending_consent.decide, config=self.config)  # STOP is applied with the event
        for applied in self.storage.inbox.apply(parsed, self.config["CONCAT_TIMEOUT_SECONDS"], consent):
            row = applied.row
            if applied.invalid:
                outcomes.append(self._invalid(row, applied.invalid))
            elif applied.error:
                outcomes.append(self._failure(row, applied.error))
            elif applied.event is None:
                outcomes.append(Outcome(row.id, "done", note=applied.note, message_id=row.message_id))
                metrics.PROCESSED.labels(row.kind, "waiting").inc()
            else:
                ready.append((row, applied.event))

        started = last_finish = time.monotonic()
        processed = len(rows) - len(ready)
        for i, (row, event) in enumerate(ready):
            now = time.monotonic()
            if i and (self.stopping or now - started > self.config["LEASE_SECONDS"] / 4):
                break  # the rest is given back (run_once)
            if self.policy.settle_now(len(outcomes), now - last_finish):
                # Outcomes go out in small groups, not at the end of the batch: a worker killed
                # mid-batch leaves at most settle_every dispatched events to be dispatched again.
                self._finish(outcomes)
                outcomes, last_finish = [], now
            self._let_requests_run()
            outcomes.append(self._dispatch(row, event))
            processed += 1
        self._finish(outcomes)
        return processed

    # -- the steps -----------------------------------------------------------------------------
    def _parse(self, row) -> Event | Outcome:
        self._let_requests_run()
        try:
            return parse_stored(row)
        except InvalidPayload as exc:
            return self._invalid(row, exc.errors)

    def _dispatch(self, row, event: Event) -> Outcome:
        if event.test == "doctor":  # `flask vonage doctor`'s round trip proved it is stored: no handler runs
            return Outcome(row.id, "done", note="doctor's signed test callback: stored, not dispatched",
                           message_id=event.message_id, status=event.status)
        try:
            sends = dispatch.dispatch(event, self.config)
        except BaseException as exc:  # a handler's sys.exit() is its own failure too
            if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, SystemExit) and self.hard_stop):
                raise
            return self._failure(row, safe_text(traceback.format_exc(limit=20)), exc)
        metrics.PROCESSED.labels(row.kind, "done").inc()
        metrics.LAG_SECONDS.observe(max(0.0, time.time() - row.received_at))
        return Outcome(row.id, "done", message_id=event.message_id, status=event.status, sends=tuple(sends))

    def _finish(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        self.storage.inbox.finish(self.name, outcomes)
        self.held.difference_update(o.event_id for o in outcomes)
        self.progress_at = time.time()
        if any(o.sends for o in outcomes):
            self.wake_sender()

    def _invalid(self, row, errors) -> Outcome:
        log.warning("event %s (%s) is invalid: %s", row.id, row.kind, safe_text(json.dumps(errors), 500))
        metrics.PROCESSED.labels(row.kind, "invalid").inc()
        return Outcome(row.id, "invalid", error=json.dumps(errors))

    def _failure(self, row, error: str, exc: BaseException | None = None) -> Outcome:
        """Keep the traceback; retry later, or after MAX_ATTEMPTS keep the event as dead."""
        if row.attempts >= self.config["MAX_ATTEMPTS"]:
            outcome = Outcome(row.id, "dead", error=error)
        else:
            delay = retry_delay(row.attempts, self.config["RETRY_BASE_SECONDS"], self.config["RETRY_MAX_SECONDS"])
            outcome = Outcome(row.id, "failed", error=error, retry_at=time.time() + delay)
        reason = f"{exc.__class__.__name__}: {exc}" if exc is not None else error.strip().splitlines()[-1]
        log.warning("event %s failed (attempt %d, now %s): %s", row.id, row.attempts, outcome.state,
                    safe_text(reason, 300))
        metrics.PROCESSED.labels(row.kind, outcome.state).inc()
        return outcome

    def _let_requests_run(self) -> None:
        # In a web process, hand the GIL to any request thread waiting for it between two
        # events. Left alone, the interpreter lets a busy worker thread run 5 ms before a
        # waiting thread gets a turn, and acknowledgements would wait on the worker.
        if self.beside_requests:
            time.sleep(0)

    def give_back(self, event_ids: list[int] | None = None) -> None:
        """Make these claimed events (by default all this worker holds) due again now, attempt uncounted."""
        event_ids = sorted(self.held) if event_ids is None else event_ids
        if not event_ids:
            return
        try:
            self.storage.inbox.release(self.name, event_ids)
        except Exception as exc:  # the database is down: their leases run out, and they are claimed again
            log.warning("worker %s could not give back %d events: %s", self.name, len(event_ids),
                        exc.__class__.__name__)
        self.held.difference_update(event_ids)

    # -- upkeep --------------------------------------------------------------------------------
    def housekeeping(self) -> None:
        """Sweep timed-out multipart SMS and apply RETENTION_DAYS, each when it is due."""
        now = time.time()
        if now - self._last_sweep >= min(30.0, self.config["CONCAT_TIMEOUT_SECONDS"] / 4):
            self._last_sweep = now
            if self.storage.inbox.requeue_expired_parts(self.config["CONCAT_TIMEOUT_SECONDS"], now):
                self._wake.set()
        if now - self._last_prune >= self.policy.prune_every_seconds:
            self._last_prune = now
            self.storage.stats.prune_traffic(now - traffic.KEEP_DAYS * 86400)
            retention_days = self.config["RETENTION_DAYS"]
            if retention_days > 0:
                deleted = self.storage.inbox.prune(retention_days * 86400, now)
                log.info("pruned %d events older than %g days", deleted["events"], retention_days)

    def beat(self) -> None:
        """Say this worker is alive, and keep the leases of what it holds from running out."""
        self.storage.inbox.heartbeat(self.name, self.processed, self.progress_at, held=sorted(self.held),
                               lease_seconds=self.config["LEASE_SECONDS"])
