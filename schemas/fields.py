"""Building blocks every payload schema shares: the tolerant base schema and lenient fields.

Nothing here knows a Vonage field name; it only decides how forgiving a single value may be.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from marshmallow import INCLUDE, Schema, fields, validate

NOT_EMPTY = validate.Length(min=1)
_UTC_SUFFIX = re.compile(r"\s*UTC$", re.IGNORECASE)


class TolerantSchema(Schema):
    """Keeps unknown fields and accepts null for anything optional."""

    class Meta:
        unknown = INCLUDE  # Vonage adds fields without notice; a new field must never drop a callback

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        # Vonage's SDK samples send null for absent optional members; only required ones must be set.
        field_obj.allow_none = not field_obj.required


class Str(fields.String):
    """A string that also accepts a JSON number: Vonage sends `"1340"` and `1340` for the same field."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        return super()._deserialize(value, attr, data, **kwargs)


class Timestamp(fields.Field):
    """ISO-8601 (with or without fraction, `Z` or offset), `... UTC`, or SMS API `YYYY-MM-DD HH:MM:SS`.

    Returns a timezone-aware UTC datetime; a value without a zone is UTC, as every Vonage timestamp is.
    """

    default_error_messages = {"invalid": "Not a recognised timestamp."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime | None:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        text = _UTC_SUFFIX.sub("", value.strip())
        if not text:
            return None
        try:
            parsed = datetime.fromisoformat(text)
            # A date at the edge of the calendar with an offset (9999-12-31T23:59-01:00) has no UTC value.
            return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
        except (ValueError, OverflowError) as err:
            raise self.make_error("invalid") from err
