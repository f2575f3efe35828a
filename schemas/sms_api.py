"""SMS API (legacy) inbound SMS and delivery receipts, loaded into an `Event`.

Takes the flat parameter dict the caller extracted; does not join multipart SMS or check `sig`.
"""
from __future__ import annotations

from typing import Any

from marshmallow import fields, post_load

from schemas.event import Event
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
    concat_total = fields.Integer(data_key="concat-total")
    concat_part = fields.Integer(data_key="concat-part")

    @post_load(pass_original=True)
    def make_event(self, data: dict[str, Any], original: dict[str, Any], **kwargs: Any) -> Event:
        binary = {key: data[key] for key in ("data", "udh") if data.get(key) is not None}
        return Event(
            kind="inbound",
            source=SOURCE,
            message_id=data["message_id"],
            channel="sms",
            to=data.get("to"),
            from_=data.get("msisdn"),  # on inbound, msisdn is the sender
            timestamp=data.get("message_timestamp"),
            message_type=data.get("type"),
            text=data.get("text"),
            content=binary,
            raw=original,  # concat-* stay here: joining the parts is the caller's job
        )


class DeliveryReceiptSchema(SmsSchema):
    status = Str(required=True, validate=NOT_EMPTY)
    err_code = Str(data_key="err-code")
    price = Str()
    network_code = Str(data_key="network-code")
    scts = Str()
    client_ref = Str(data_key="client-ref")

    @post_load(pass_original=True)
    def make_event(self, data: dict[str, Any], original: dict[str, Any], **kwargs: Any) -> Event:
        err_code, price = data.get("err_code"), data.get("price")
        return Event(
            kind="status",
            source=SOURCE,
            message_id=data["message_id"],
            channel="sms",
            to=data.get("msisdn"),  # on a receipt, msisdn is the recipient of our SMS
            from_=data.get("to"),
            timestamp=data.get("message_timestamp"),
            status=data["status"],
            client_ref=data.get("client_ref"),
            error={"code": err_code} if err_code not in (None, "", "0") else None,
            usage={"price": price} if price else None,
            raw=original,
        )
