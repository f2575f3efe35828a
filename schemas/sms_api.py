"""SMS API (legacy) inbound SMS and delivery receipts, loaded into an `Event`.

Takes the flat parameter dict the caller extracted; does not join multipart SMS or check `sig`.
"""
from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from schemas.fields import NOT_EMPTY, Str, Timestamp, TolerantSchema

SOURCE = "sms-api"


class SmsSchema(TolerantSchema):
    """Parameters both callbacks share."""

    message_id = Str(data_key="messageId", required=True, validate=NOT_EMPTY)
    msisdn = Str()
    to = Str()
    api_key = Str(data_key="api-key")
    message_timestamp = Timestamp(data_key="message-timestamp")


class InboundSmsSchema(SmsSchema):
    type = Str()  # text, unicode or binary
    text = Str()
    keyword = Str()
    data = Str()
    udh = Str()
    concat = Str()
    concat_ref = Str(data_key="concat-ref")
    # A concatenated SMS has at most 255 parts: the count is one byte of the user data header.
    concat_total = fields.Integer(data_key="concat-total", validate=validate.Range(1, 255))
    concat_part = fields.Integer(data_key="concat-part", validate=validate.Range(1, 255))

    @validates_schema
    def part_within_total(self, data: dict[str, Any], **kwargs: Any) -> None:
        part, total = data.get("concat_part"), data.get("concat_total")
        if part is not None and total is not None and part > total:
            raise ValidationError(f"Part {part} of a message of {total} parts.", "concat-part")

    @post_load
    def event_fields(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # concat-* stay in Event.raw: joining the parts is the caller's job.
        return {
            "kind": "inbound",
            "source": SOURCE,
            "message_id": data["message_id"],
            "channel": "sms",
            "to": data.get("to"),
            "from_": data.get("msisdn"),  # on inbound, msisdn is the sender
            "timestamp": data.get("message_timestamp"),
            "message_type": data.get("type"),
            "text": data.get("text"),
            "content": {key: data[key] for key in ("data", "udh") if data.get(key) is not None},
        }


class DeliveryReceiptSchema(SmsSchema):
    # A receipt without a status (Vonage's .NET SDK fixture TestDlrStructNoStatus) is still a receipt:
    # dispatched as Vonage's own "unknown", never kept invalid.
    status = Str(load_default="unknown", validate=NOT_EMPTY)
    err_code = Str(data_key="err-code")
    price = Str()
    network_code = Str(data_key="network-code")
    scts = Str()
    client_ref = Str(data_key="client-ref")

    @post_load
    def event_fields(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        err_code, price = data.get("err_code"), data.get("price")
        return {
            "kind": "status",
            "source": SOURCE,
            "message_id": data["message_id"],
            "channel": "sms",
            "to": data.get("msisdn"),  # on a receipt, msisdn is the recipient of our SMS
            "from_": data.get("to"),
            "timestamp": data.get("message_timestamp"),
            "status": data["status"],
            "client_ref": data.get("client_ref"),
            "error": {"code": err_code} if err_code not in (None, "", "0") else None,
            "usage": {"price": price} if price else None,
        }
