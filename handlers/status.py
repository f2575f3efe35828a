"""Status handlers: what to do when Vonage reports on a message you sent.

The shipped ones log one structured line each. Replace the body with your business logic;
keep it idempotent (see handlers/__init__.py).
"""
import logging

from schemas import Event

log = logging.getLogger("handlers.status")


def _log(event: Event, level: int = logging.INFO) -> None:
    log.log(
        level,
        "status=%s message_id=%s channel=%s to=%s client_ref=%s error=%s superseded=%s",
        event.status,
        event.message_id,
        event.channel,
        event.to,
        event.client_ref,
        (event.error or {}).get("code"),
        event.superseded,
    )


def on_submitted(event: Event) -> None:
    """Vonage handed the message to the carrier or provider (SMS/MMS are billed here)."""
    _log(event)


def on_delivered(event: Event) -> None:
    """The carrier or the app confirmed delivery."""
    _log(event)


def on_read(event: Event) -> None:
    """The recipient opened the message (WhatsApp, Messenger, Viber, RCS)."""
    _log(event)


def on_rejected(event: Event) -> None:
    """Vonage or the provider refused the message; `event.error["code"]` says why."""
    _log(event, logging.WARNING)


def on_undeliverable(event: Event) -> None:
    """Vonage could not reach the provider."""
    _log(event, logging.WARNING)


def on_accepted(event: Event) -> None:
    """SMS API receipt: the carrier took the message for delivery."""
    _log(event)


def on_buffered(event: Event) -> None:
    """SMS API receipt: the message is queued for later delivery."""
    _log(event)


def on_expired(event: Event) -> None:
    """SMS API receipt: the carrier gave up retrying."""
    _log(event, logging.WARNING)


def on_failed(event: Event) -> None:
    """SMS API receipt: delivery failed; `event.error["code"]` is the err-code."""
    _log(event, logging.WARNING)


def on_unknown(event: Event) -> None:
    """SMS API receipt with status "unknown"."""
    _log(event, logging.WARNING)


def on_unknown_status(event: Event) -> None:
    """A status value this project does not know yet: log it and succeed."""
    log.warning("unhandled status=%r message_id=%s source=%s", event.status, event.message_id, event.source)
