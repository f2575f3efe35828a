"""The text formats this project writes everywhere: ISO-8601 UTC times, compact JSON, and text any column takes.

Pure functions, no imports from the rest of the project.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any


def iso(value: datetime | float | None, timespec: str = "auto") -> str | None:
    """An aware datetime or an epoch time as ISO-8601 UTC with a `Z` (None stays None, and so does a time no
    calendar holds: inf, NaN, or past the year 9999)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        if not math.isfinite(value) or not -62135596800 <= value <= 253402300799:
            return None
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def compact_json(value: Any) -> bytes:
    """JSON without spaces, non-ASCII kept as UTF-8: the bytes Vonage sends, and what its samples hash."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def safe_text(text: str, limit: int = 20_000) -> str:
    """`text` as any text column and log line takes it: NUL and lone surrogates escaped, at most `limit` characters.

    For what we write about an event (a traceback quotes the values that broke it), never for its data.
    """
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def storable(value, limit: int) -> str | None:
    """`value` as a string that any database column takes (valid UTF-8, no NUL, at most `limit`
    characters), or None when it is not one: such a value is never cut to fit."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) > limit or "\x00" in text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a "\ud800" escape
        return None
    return text


def stored_object(text: str | None) -> dict:
    """A JSON object this app stored (headers kept, a message's content), read back whatever it holds:
    text that is not a JSON object reads as {}, so no stored value can keep a page from being shown."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

