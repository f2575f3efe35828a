"""The callbacks this receiver takes, in one table: for each kind its path, its transport (how it is
verified, read and shown), its natural key and how the console names it.

Everything that differs between the Messages API and the SMS API is said here once, as data and as the
two transports' functions; the routes, the worker, the console and the signer ask this table instead of
testing a kind's name. Adding a kind is one row (and its schema in schemas/).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from receiver.webhooks.payloads import json_object, sms_params


def _read_messages(query: str, body: bytes, content_type: str) -> dict | None:
    return json_object(body)


def _messages_channel(fields: dict) -> str | None:
    legacy = next((fields[side] for side in ("to", "from") if isinstance(fields.get(side), dict)), None)  # v0.1
    return (legacy or {}).get("type") if legacy is not None else fields.get("channel")


@dataclass(frozen=True)
class Transport:
    """How one Vonage API's callbacks travel: signed, carried and shown."""

    name: str
    signature: str  # "jwt": a bearer token over the body's hash; "sig": a parameter over the other parameters
    # The callback's fields from the request as received (None: not readable as such).
    # :raises receiver.webhooks.payloads.DuplicateParameter: a parameter given twice (SMS API).
    read: Callable[[str, bytes, str], dict | None]
    channel: Callable[[dict], str | None]  # which channel a callback's fields say it came by
    claims: tuple[str, ...]  # what is kept of what verified it: the JWT's claims, or the signing parameters
    test_mark: str  # the field `flask vonage trigger` and `doctor` add, covered by the signature
    verification: str  # how the console describes a verified callback of this transport ({api_key}: whose)


MESSAGES = Transport(
    name="messages-api", signature="jwt", read=_read_messages, channel=_messages_channel,
    claims=("api_key", "application_id", "jti", "iat"), test_mark="receiver_test",
    verification="Messages API JWT (HS256) signed with the signature secret of api_key {api_key}; "
                 "payload_hash matched the body")
SMS = Transport(
    name="sms-api", signature="sig", read=sms_params, channel=lambda fields: "sms",
    claims=("api-key", "nonce", "timestamp"), test_mark="receiver-test",
    verification="SMS API signature: the sig parameter over every other parameter, with VONAGE_SIGNATURE_METHOD")


@dataclass(frozen=True)
class Kind:
    """One callback Vonage sends, as this receiver takes it."""

    name: str  # stored in events.kind
    path: str
    methods: tuple[str, ...]
    transport: Transport
    event: str  # what schemas make of it: "status" or "inbound" (Event.kind)
    key: tuple[str, ...]  # the fields of its natural identity; a repeat of them is the same callback
    required: int  # how many of `key` must be present for it to be a key (the rest may be empty)
    url_setting: str  # where Vonage is told this URL: the application's field or the account's setting
    title: str  # what the console calls it


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("message-status", "/webhooks/message-status", ("POST",), MESSAGES, "status",
         ("message_uuid", "status", "timestamp"), 2, "status_url", "Messages status"),
    Kind("inbound-message", "/webhooks/inbound-message", ("POST",), MESSAGES, "inbound",
         ("message_uuid",), 1, "inbound_url", "Messages inbound"),
    Kind("inbound-sms", "/webhooks/inbound-sms", ("GET", "POST"), SMS, "inbound",
         ("messageId", "concat-part"), 1, "moCallBackUrl", "SMS inbound"),
    Kind("delivery-receipt", "/webhooks/delivery-receipt", ("GET", "POST"), SMS, "status",
         ("messageId", "status", "err-code", "message-timestamp"), 2, "drCallBackUrl", "SMS delivery receipt"),
)}
