"""Reconciling parsed events with what is stored: a message's state moves forward only, its history keeps
every status, multipart SMS parts wait for each other, and a status about a message we sent joins it.

APPLY_CHUNK events share a transaction. Whatever one event holds (values over a column, a value the
database refuses, a bug met on its way) holds back that event alone; only the database being down
leaves here, and then nothing is lost (the worker's claims are given back or run out).
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError

from receiver.platform.formats import safe_text
from receiver.storage import guards, multipart, outbox, state, suppressions
from receiver.storage.engines import run_again_if_it_loses_a_race, unavailable, write_transaction
from schemas import Event

APPLY_CHUNK = 50  # events whose message state is written in one transaction


@dataclass(frozen=True)
class Applied:
    """One parsed event after its message state was written: what to dispatch, or why nothing yet."""

    row: object  # the claimed row
    event: Event | None  # the event to dispatch (a multipart SMS: the joined message); None with note or error
    note: str | None = None  # nothing to dispatch yet, e.g. a multipart part waiting for the rest
    error: str | None = None  # the traceback of a bug that kept it from being applied
    invalid: dict | None = None  # field -> reasons its values cannot be stored (never cut to fit)


@dataclass(frozen=True)
class _Rules:
    concat_timeout: float
    ours: bool  # the outbox holds messages, so a status may be about one of ours
    consent: object = None  # event -> what it does to the suppression list (receiver.sending.consent.decide)
    reply_cap: int = 0


def apply(engine: Engine, parsed: list[tuple[object, Event]], concat_timeout: float, consent=None,
          reply_cap: int = 0) -> list[Applied]:
    """Write the message state of each (row, event), APPLY_CHUNK events per transaction; one Applied
    each, in the order given.

    :raises sqlalchemy.exc.SQLAlchemyError: when the database itself fails.
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
    rules = _Rules(concat_timeout, outbox.used(engine) if about_sends else False, consent, reply_cap)
    for start in range(0, len(fit), APPLY_CHUNK):
        chunk = fit[start:start + APPLY_CHUNK]
        try:
            applied.update(run_again_if_it_loses_a_race(lambda: _apply_chunk(engine, chunk, rules)))
        except Exception as exc:
            if unavailable(exc):
                raise
            # One transaction each, so the others of the chunk still go through.
            for row, event in chunk:
                applied[row.id] = _apply_alone(engine, row, event, rules)
    return [applied[row.id] for row, _ in parsed]


def _lock_order(event: Event) -> str:
    """What applying this event locks first: its multipart group's row, or its message's."""
    info = multipart.part_info(event) if event.source == "sms-api" else None
    return "g:" + info[0] if info else "m:" + (event.message_id or "")


def _apply_chunk(engine: Engine, chunk: list, rules: _Rules) -> dict[int, Applied]:
    """One transaction: the chunk's statuses in a few statements together (state.record_statuses), its
    inbound messages in one (state.record_inbounds), multipart parts one by one. A message whose events
    are of more than one of these has them all one by one, so each message's events keep their order."""
    groups = {"status": [], "inbound": [], "part": []}
    for row, event in chunk:
        part = event.kind != "status" and event.source == "sms-api" and multipart.part_info(event)
        groups["status" if event.kind == "status" else "part" if part else "inbound"].append((row, event))
    ids = [{event.message_id for _, event in group} for group in groups.values()]
    if sum(map(len, ids)) != len(set().union(*ids)):
        groups = {"status": [], "inbound": [], "part": chunk}
    with write_transaction(engine) as conn:
        applied = {row.id: _apply_one(conn, row, event, rules) for row, event in groups["part"]}
        if groups["inbound"]:
            state.record_inbounds(conn, [event for _, event in groups["inbound"]])
            for row, event in groups["inbound"]:
                _apply_consent(conn, row, event, rules)
                applied[row.id] = Applied(row, event)
        if groups["status"]:
            after = state.record_statuses(conn, [event for _, event in groups["status"]])
            applied.update({row.id: _applied_status(conn, row, event, status, rules)
                            for (row, event), status in zip(groups["status"], after)})
        return applied


def _apply_alone(engine: Engine, row, event: Event, rules: _Rules) -> Applied:
    try:
        with write_transaction(engine) as conn:
            return _apply_one(conn, row, event, rules)
    except Exception as exc:
        if unavailable(exc):
            raise
        if isinstance(exc, (DataError, IntegrityError)):  # the database refuses these values
            reason = f"{exc.__class__.__name__}: {getattr(exc, 'orig', exc)}".splitlines()[0]
            return Applied(row, None, invalid={"_database": [safe_text(reason, 500)]})
        return Applied(row, None, error=safe_text(traceback.format_exc(limit=20)))


def _apply_one(conn, row, event: Event, rules: _Rules) -> Applied:
    if event.kind == "status":
        return _applied_status(conn, row, event, state.record_status(conn, event), rules)
    info = multipart.part_info(event) if event.source == "sms-api" else None
    if info:
        joined = multipart.collect(conn, event, rules.concat_timeout)
        if joined is None:
            _, part, total = info
            return Applied(row, None, note=f"part {part}/{total} of a multipart SMS stored; waiting for the rest")
        event = joined
    state.record_inbound(conn, event)
    _apply_consent(conn, row, event, rules)
    return Applied(row, event)


def _applied_status(conn, row, event: Event, status: str | None, rules: _Rules) -> Applied:
    """A status event once its message's status after it (`status`, ranked) is written."""
    # The outbox sends through the Messages API: an SMS API receipt is never about one of its messages.
    sent = outbox.attach_status(conn, event.message_id, event.client_ref, status or event.status,
                                time.time()) if rules.ours and event.source != "sms-api" else None
    _apply_consent(conn, row, event, rules)
    return Applied(row, dataclasses.replace(event, superseded=status != event.status, outbox_id=sent))


# The positions of the messages the receiver queues itself for an inbound event, beside its handler's 0, 1, ...
OPT_OUT_REPLY, HELP_REPLY = -1, -2


def _apply_consent(conn, row, event: Event, rules: _Rules) -> None:
    """What this event does to the suppression list, before any handler runs (a STOP never waits on one), in
    the transaction that records it: the opt-out confirmation goes once, when the number is first suppressed."""
    change = rules.consent(event) if rules.consent is not None else None
    if change is None:
        return
    now, reply = time.time(), None
    if change.action == "opt_out":
        added = suppressions.add(conn, change.number, reason=change.reason, source=change.source, event_id=row.id,
                                 now=now)
        reply = (OPT_OUT_REPLY, guards.EXEMPT) if added and change.reply else None
    elif change.action == "opt_in":
        suppressions.remove(conn, change.number)
    elif change.action == "help" and change.reply:
        reply = (HELP_REPLY, "help-reply")
    if reply is not None:
        position, purpose = reply
        outbox.enqueue(conn, [outbox.row_values(change.reply, event_id=row.id, position=position, now=now,
                                                purpose=purpose)], per_minute=rules.reply_cap)
