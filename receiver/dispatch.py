"""Dispatch: the handler the tables in handlers/ name for an event, and running it.

The tables are plain dicts the user edits; this module only reads them.
"""
from __future__ import annotations

import handlers
from receiver import sending
from schemas import Event


def handler_for(event: Event):
    """The function the dispatch tables name for this event (a default when none does)."""
    if event.kind == "status":
        return handlers.STATUS_HANDLERS.get(event.status, handlers.DEFAULT_STATUS_HANDLER)
    table = handlers.INBOUND_HANDLERS
    return (
        table.get(f"{event.channel}:{event.message_type}")
        or table.get(event.message_type)
        or handlers.DEFAULT_INBOUND_HANDLER
    )


def dispatch(event: Event) -> list[dict]:
    """Run the event's handler; the messages it sent (receiver.sending), to queue if it returned.
    Whatever it raises is the caller's to record."""
    with sending.collecting() as sends:
        handler_for(event)(event)
    return sends
