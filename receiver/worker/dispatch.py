"""Dispatch: the handler the tables in handlers/ name for an event, running it, and checking the tables.

The tables are plain dicts the user edits; this module only reads them. A key Vonage never sends
or a value that is not a function is a start error naming the line, never a silent fall-through.
"""
from __future__ import annotations

import ast
import difflib
import inspect

import handlers
from receiver import sending, settings
from receiver.platform.config import ConfigError
from schemas import Event
from schemas.vocabulary import CHANNELS, DLR_STATUSES, INBOUND_TYPES, MESSAGE_TYPES, SMS_API_TYPES, STATUSES


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


def dispatch(event: Event, config: dict | None = None) -> list[dict]:
    """Run the event's handler (reading `config` through receiver.settings); the messages it sent
    (receiver.sending), to queue if it returned. Whatever it raises is the caller's to record."""
    with sending.collecting() as sends, settings.using(config):
        handler_for(event)(event)
    return sends


def problems() -> list[str]:
    """What is wrong with the dispatch tables, one line each, naming where ([] when nothing is)."""
    found = []
    statuses = (*STATUSES, *DLR_STATUSES)
    for key, function in handlers.STATUS_HANDLERS.items():
        if key not in statuses:
            found.append(_at("STATUS_HANDLERS", key, f"Vonage sends no status {key!r}{_close(key, statuses)}"))
        elif not callable(function):
            found.append(_at("STATUS_HANDLERS", key, f"{function!r} is not a function"))
    for key, function in handlers.INBOUND_HANDLERS.items():
        channel, colon, message_type = key.rpartition(":")
        if colon and channel not in CHANNELS:
            found.append(_at("INBOUND_HANDLERS", key, f"{channel!r} is not a channel{_close(channel, CHANNELS)}"))
            continue
        known = (*INBOUND_TYPES[channel], *(SMS_API_TYPES if channel == "sms" else ())) if colon else MESSAGE_TYPES
        if message_type not in known:
            where = f" on {channel}" if colon else ""
            found.append(_at("INBOUND_HANDLERS", key,
                             f"Vonage sends no message type {message_type!r}{where}{_close(message_type, known)}"))
        elif not callable(function):
            found.append(_at("INBOUND_HANDLERS", key, f"{function!r} is not a function"))
    for name in ("DEFAULT_STATUS_HANDLER", "DEFAULT_INBOUND_HANDLER"):
        if not callable(getattr(handlers, name, None)):
            found.append(f"handlers/__init__.py: {name} is not a function")
    return found


def init_app(app) -> None:
    """Refuse to start with a dispatch table that would send events nowhere, or to a typo.

    :raises ConfigError: naming each entry at fault, with its line in handlers/__init__.py.
    """
    found = problems()
    if found:
        raise ConfigError("the dispatch tables in handlers/ have mistakes:\n  " + "\n  ".join(found))


def _close(value: str, known) -> str:
    match = difflib.get_close_matches(value, known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _at(table: str, key: str, problem: str) -> str:
    return f"handlers/__init__.py line {_line_of(table, key) or '?'}: {table}[{key!r}]: {problem}"


def _line_of(table: str, key: str) -> int | None:
    """Where the literal dict `table` in handlers/__init__.py has `key` (None when it is not a literal there)."""
    try:
        tree = ast.parse(inspect.getsource(handlers))
    except (OSError, TypeError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == table for t in node.targets) \
                and isinstance(node.value, ast.Dict):
            for literal in node.value.keys:
                if isinstance(literal, ast.Constant) and literal.value == key:
                    return literal.lineno
    return None
