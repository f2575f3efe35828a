"""Poison callbacks: correctly signed, each with a value that fits no schema or no column, or that no
parser should trust. Each must be stored, end `invalid` at its first attempt, and hold back nothing
(tests/worker/test_loop.py through the test client, tests/system/test_stalls.py through gunicorn)."""
from __future__ import annotations

from devkit import samples
from tests.conftest import compact

OVER = "x" * 300  # longer than any id column (255)


def status(**fields):
    return {**samples.message_status("delivered", "whatsapp"), **fields}


def inbound(**fields):
    return {**samples.inbound_message("whatsapp", "text"), **fields}


def nested(levels: int):
    value: object = "deep"
    for _ in range(levels):
        value = [value]
    return value


# (what it is, kind, the signed body as bytes): each must end `invalid`, at its first attempt.
MESSAGES_POISON = [
    ("timestamp past the calendar", "message-status", compact(status(timestamp="9999-12-31T23:59:59-01:00"))),
    ("timestamp before the calendar", "message-status", compact(status(timestamp="0001-01-01T00:00:00+01:00"))),
    ("client_ref over its column", "message-status", compact(status(client_ref=OVER))),
    ("NUL in client_ref", "message-status", compact(status(client_ref="order\x00-1"))),
    ("lone surrogate in message_uuid", "message-status",
     compact(status()).replace(b'"message_uuid":"', b'"message_uuid":"\\ud800', 1)),
    ("lone surrogate in to", "inbound-message", compact(inbound()).replace(b'"to":"', b'"to":"\\udfff', 1)),
    ("NUL in the text", "inbound-message", compact(inbound(text="hi\x00there"))),
    ("channel over its column", "message-status", compact(status(channel="c" * 40))),
    ("status over its column", "message-status", compact(status(status="s" * 70))),
    ("message_uuid is an object", "message-status", compact(status(message_uuid={"a": 1}))),
    ("status is a list", "message-status", compact(status(status=["delivered"]))),
    ("timestamp is a number", "message-status", compact(status(timestamp=5))),
    ("channel is a boolean", "inbound-message", compact(inbound(channel=True))),
    ("NaN", "message-status", compact(status()).replace(b'"channel"', b'"x":NaN,"channel"', 1)),
    ("a number past any float", "message-status", compact(status(usage={"price": "1"})).replace(b'"1"', b"1e400")),
    ("an integer of 5,000 digits", "message-status", compact(status(usage={"price": "1"})).replace(b'"1"', b"9" * 5000)),
    ("latitude past any float", "inbound-message",
     compact(inbound(message_type="location", location={"lat": 1, "long": 2})).replace(b'"lat":1', b'"lat":' + b"9" * 400)),
    ("nested 200 levels deep", "inbound-message", compact(inbound(message_type="image", image={"url": nested(200)}))),
    ("error code over its column", "message-status", compact(status(status="rejected", error={"title": "9" * 80}))),
]

SMS_POISON = [
    ("receipt timestamp past the calendar", "delivery-receipt",
     samples.delivery_receipt("delivered", **{"message-timestamp": "9999-12-31T23:59:59-01:00"})),
    ("messageId over its column", "delivery-receipt", samples.delivery_receipt("failed", messageId=OVER)),
    ("concat-total of a trillion", "inbound-sms",
     samples.inbound_sms(**{"concat": "true", "concat-ref": "7", "concat-total": "999999999999", "concat-part": "1"})),
    ("concat-part 0", "inbound-sms",
     samples.inbound_sms(**{"concat": "true", "concat-ref": "8", "concat-total": "3", "concat-part": "0"})),
    ("concat-part past concat-total", "inbound-sms",
     samples.inbound_sms(**{"concat": "true", "concat-ref": "9", "concat-total": "2", "concat-part": "200"})),
    ("concat-ref past its column", "inbound-sms",
     samples.inbound_sms(**{"concat": "true", "concat-ref": "r" * 600, "concat-total": "2", "concat-part": "1"})),
    ("NUL in msisdn", "inbound-sms", samples.inbound_sms(msisdn="4477\x00")),
]
