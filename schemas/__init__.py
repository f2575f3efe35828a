"""Payload shapes: `load_event` turns any Vonage callback body into an `Event`, or raises `InvalidPayload`.

Pure parsing: no Flask, no storage, no handler calls.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from marshmallow import Schema, ValidationError

from schemas import messages_v01, messages_v1, sms_api
from schemas.event import Event

__all__ = ["Event", "InvalidPayload", "SCHEMAS", "TEST_MARKS", "load_event"]

# The field this app's own CLI adds to the callbacks it signs and sends (`flask vonage trigger`, `doctor`):
# covered by the signature, so only a holder of the secret can set it. Vonage never sends it. Where the
# signature was not checked (SIGNATURE_VERIFICATION=jwt-only or off), anyone could: it counts for nothing.
TEST_MARKS = {"receiver_test": ("trigger", "doctor"), "receiver-test": ("trigger", "doctor")}

# Messages kinds come in two shapes, told apart by `messages_version`; SMS API kinds in one.
SCHEMAS: dict[str, type[Schema] | dict[str, type[Schema]]] = {
    "message-status": {"v1": messages_v1.StatusSchema, "v0.1": messages_v01.StatusSchema},
    "inbound-message": {"v1": messages_v1.InboundSchema, "v0.1": messages_v01.InboundSchema},
    "inbound-sms": sms_api.InboundSmsSchema,
    "delivery-receipt": sms_api.DeliveryReceiptSchema,
}


class InvalidPayload(ValueError):
    """A callback body that cannot become an Event; `errors` is marshmallow's field -> messages dict."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(f"invalid payload: {errors}")
        self.errors = errors


def messages_version(payload: dict[str, Any]) -> str:
    """The Messages shape: "v0.1" if `to`/`from` or a top-level `message` are objects, else "v1" (v0.1 nests them)."""
    legacy = any(isinstance(payload.get(key), dict) for key in ("to", "from", "message"))
    return "v0.1" if legacy else "v1"


def load_event(kind: str, payload: dict[str, Any], *, event_id: int | None = None, signed: bool = True) -> Event:
    """Load one callback body of the given kind ("message-status", "inbound-message", "inbound-sms",
    "delivery-receipt") into an Event; `event_id` is the stored callback's id, `signed` whether its
    signature was checked (the TEST_MARKS count only then).

    :raises InvalidPayload: the body is not an object, lacks its id (or status), has a value of a
        type that cannot be coerced, or makes a schema fail in any other way. Unknown fields,
        channels, statuses and message types never raise.
    :raises KeyError: `kind` is not one of the four above (a programming error, not a bad payload).
    """
    schema = SCHEMAS[kind]
    if not isinstance(payload, dict):
        raise InvalidPayload({"_schema": ["Invalid input type: expected a JSON object."]})
    if isinstance(schema, dict):
        schema = schema[messages_version(payload)]
    try:
        fields = _instance(schema).load(payload)
    except ValidationError as err:
        raise InvalidPayload(err.normalized_messages()) from err
    except Exception as err:  # whatever a hostile value makes a schema raise stays this payload's problem
        raise InvalidPayload({"_schema": [f"{err.__class__.__name__}: {err}"[:500]]}) from err
    test = next((payload[k] for k, values in TEST_MARKS.items() if payload.get(k) in values), None) if signed else None
    return Event(**fields, test=test, raw=payload, event_id=event_id)


@lru_cache(maxsize=None)
def _instance(schema_class):
    # One instance per schema class: building a schema (and its nested ones) costs more than loading.
    return schema_class()
