"""Inbound handlers: what to do when someone sends you a message.

The shipped ones log one structured line each. Replace the body with your business logic;
keep it idempotent (see handlers/__init__.py). Media URLs expire (about 48 h): fetch promptly.
"""
import logging

from receiver.sending import reply
from receiver.settings import setting
from schemas import Event

log = logging.getLogger("handlers.inbound")


def on_inbound_text(event: Event) -> None:
    """A text message (SMS parts already joined). With AUTO_REPLY_TEXT set, answers it: an example to copy.

    STOP, START and HELP are handled before this runs (receiver.sending.consent); it still gets them.
    """
    if text := setting("AUTO_REPLY_TEXT"):
        # Queued only if this handler returns, and sent once. `once_every`: one auto-reply per number per
        # AUTO_REPLY_INTERVAL_SECONDS, so two auto-responders never answer each other for ever.
        reply(event, text=text, purpose="auto-reply", once_every=setting("AUTO_REPLY_INTERVAL_SECONDS", 3600.0))
    log.info(
        "inbound text message_id=%s channel=%s from=%s chars=%d parts=%d incomplete=%s",
        event.message_id,
        event.channel,
        event.from_,
        len(event.text or ""),
        event.parts,
        event.incomplete,
    )


def on_inbound_media(event: Event) -> None:
    """An image, audio, video, file, vCard or sticker; the URL is in `event.content`."""
    log.info(
        "inbound %s message_id=%s channel=%s from=%s",
        event.message_type,
        event.message_id,
        event.channel,
        event.from_,
    )


def on_unsupported(event: Event) -> None:
    """The user sent something the channel cannot represent; there is no content."""
    log.info("inbound unsupported message_id=%s channel=%s from=%s", event.message_id, event.channel, event.from_)


def on_inbound(event: Event) -> None:
    """Every other message type (location, reply, button, order, reaction, binary SMS, new types)."""
    log.info(
        "inbound %s message_id=%s channel=%s from=%s",
        event.message_type,
        event.message_id,
        event.channel,
        event.from_,
    )
