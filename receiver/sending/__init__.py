"""Sending from a handler: `send(...)` and `reply(event, ...)` queue a Messages API message.

What a handler sends is collected while it runs and written to the outbox only if it returns, each
keyed by the event and its place among that event's sends: a re-dispatch (a retry after a raise, a
replay, a crashed worker) never queues the same message twice. The worker delivers them after.

No Flask and no database here. In a unit test, run the handler inside `collecting()`:

    with collecting() as sent:
        on_inbound_text(event)
    assert sent[0]["text"] == "Thanks!"
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from receiver.sending.bodies import build_message
from schemas import Event

# Channels whose replies quote the message they answer (Messages API `context`).
QUOTING_CHANNELS = ("whatsapp", "viber_service")

_collected: ContextVar[list[dict] | None] = ContextVar("sends", default=None)


class Send(dict):
    """A Messages API body as a handler queued it, with what the outbox's loop guards need: its `purpose`
    (say "auto-reply") and `once_every`, the seconds within which one recipient gets it at most once."""

    purpose: str | None = None
    once_every: float | None = None


class NotInHandler(RuntimeError):
    """send() or reply() called outside a handler the worker runs (or a test's `collecting()`)."""


@contextmanager
def collecting() -> Iterator[list[dict]]:
    """Collect the messages sent inside this block, in order (the worker wraps every handler in one)."""
    sends: list[dict] = []
    token = _collected.set(sends)
    try:
        yield sends
    finally:
        _collected.reset(token)


def send(*, channel: str, to: str, from_: str, text: str | None = None, message_type: str = "text",
         purpose: str | None = None, once_every: float | None = None, **fields: Any) -> dict:
    """Queue one message; the Messages API body it will be (see receiver.sending.bodies.build_message
    for `url`, `caption`, `template`, `reply_to`, `options`, `client_ref`, `webhook_url` ...).

    The outbox keeps it back as `suppressed` when `to` opted out, and as `held` when it is over a loop
    guard: more than REPLY_MAX_PER_MINUTE to one number, or, with `once_every`, a message of the same
    `purpose` already went to `to` less than `once_every` seconds ago.

    :raises receiver.sending.bodies.InvalidMessage: a body Vonage would refuse (a ValueError).
    :raises NotInHandler: outside a handler; use `flask vonage send` or POST /api/outbox there.
    """
    body = Send(build_message(channel, message_type, to=to, from_=from_, text=text, **fields))
    body.purpose, body.once_every = purpose, None if once_every is None else float(once_every)
    sends = _collected.get()
    if sends is None:
        raise NotInHandler("send() queues a message from inside a handler; elsewhere use `flask vonage send` "
                           "or POST /api/outbox")
    sends.append(body)
    return body


def reply(event: Event, text: str | None = None, **fields: Any) -> dict:
    """Answer an inbound message on its own channel, from the number or ID it was sent to; on WhatsApp
    and Viber the answer quotes it."""
    if event.kind != "inbound":
        raise ValueError("reply() answers an inbound message; for a status use send()")
    if event.channel in QUOTING_CHANNELS and "reply_to" not in fields:
        fields["reply_to"] = event.message_id
    return send(channel=event.channel, to=event.from_, from_=event.to, text=text, **fields)
