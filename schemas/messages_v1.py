"""Messages API v1 callbacks (inbound message and message status), loaded into an `Event`.

Validates types only: unknown channels, statuses, message types and fields load as sent.
"""
from __future__ import annotations

from typing import Any

from marshmallow import fields, post_load

from schemas.content import ContentFields, content_of
from schemas.fields import NOT_EMPTY, Str, Timestamp, TolerantSchema

SOURCE = "messages-v1"


class UsageSchema(TolerantSchema):
    price = Str()  # a decimal string: never a float, it is money
    currency = Str()


class ProfileSchema(TolerantSchema):
    name = Str()
    username = Str()


class NetworkSchema(TolerantSchema):
    network_code = Str()


class MessageSchema(TolerantSchema):
    """Members common to inbound and status callbacks."""

    message_uuid = Str(required=True, validate=NOT_EMPTY)
    channel = Str(required=True, validate=NOT_EMPTY)
    to = Str()
    from_ = Str(data_key="from")
    timestamp = Timestamp()
    client_ref = Str()
    usage = fields.Nested(UsageSchema)
    profile = fields.Nested(ProfileSchema)

    @staticmethod
    def common_fields(data: dict[str, Any]) -> dict[str, Any]:
        """The Event fields inbound and status callbacks share."""
        return {
            "source": SOURCE,
            "message_id": data["message_uuid"],
            "channel": data["channel"],
            "to": data.get("to"),
            "from_": data.get("from_"),
            "timestamp": data.get("timestamp"),
            "client_ref": data.get("client_ref"),
            "usage": data.get("usage"),
            "profile_name": (data.get("profile") or {}).get("name"),
        }


# --- inbound ---------------------------------------------------------------

class InboundSmsSchema(TolerantSchema):
    num_messages = Str()
    keyword = Str()
    total_count = Str()


class ContextSchema(TolerantSchema):
    message_uuid = Str()
    message_from = Str()
    whatsapp_referred_product = fields.Dict()


class InboundWhatsappSchema(TolerantSchema):
    referral = fields.Dict()
    whatsapp_referred_product = fields.Dict()
    sender = fields.Dict()


class SelfLinkSchema(TolerantSchema):
    href = Str()


class InboundSchema(MessageSchema, ContentFields):
    message_type = Str()
    provider_message = Str()
    sms = fields.Nested(InboundSmsSchema)
    origin = fields.Nested(NetworkSchema)
    context_status = Str()
    context = fields.Nested(ContextSchema)
    whatsapp = fields.Nested(InboundWhatsappSchema)
    self_link = fields.Nested(SelfLinkSchema, data_key="_self")

    @post_load
    def event_fields(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # Vonage's own SMS inbound schema has no message_type; its SDK samples say "text".
        message_type = data.get("message_type") or ("text" if data["channel"] == "sms" else None)
        return {
            **self.common_fields(data),
            "kind": "inbound",
            "message_type": message_type,
            "text": data.get("text"),
            "content": content_of(data, message_type),
            "reply_to": (data.get("context") or {}).get("message_uuid"),
        }


# --- status ----------------------------------------------------------------

class ErrorSchema(TolerantSchema):
    type = Str()  # documentation URL ending in "#<code>"
    title = Str()  # the numeric code, usually a string, once seen as a number
    detail = Str()
    instance = Str()


class StatusSmsSchema(TolerantSchema):
    count_total = Str()


class ConversationSchema(TolerantSchema):
    id = Str()
    origin = fields.Dict()


class PricingSchema(TolerantSchema):
    type = Str()
    pricing_model = Str()
    category = Str()


class StatusWhatsappSchema(TolerantSchema):
    conversation = fields.Nested(ConversationSchema)
    pricing = fields.Nested(PricingSchema)
    recipient = fields.Dict()


class WorkflowSchema(TolerantSchema):
    """Failover sends; Vonage's SDKs disagree on the names, so every spelling is accepted."""

    id = Str()
    workflow_id = Str()
    item_number = Str()
    items_number = Str()
    items_total = Str()
    total_items = Str()


class StatusSchema(MessageSchema):
    status = Str(required=True, validate=NOT_EMPTY)
    error = fields.Nested(ErrorSchema)
    destination = fields.Nested(NetworkSchema)
    sms = fields.Nested(StatusSmsSchema)
    whatsapp = fields.Nested(StatusWhatsappSchema)
    workflow = fields.Nested(WorkflowSchema)

    @post_load
    def event_fields(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {
            **self.common_fields(data),
            "kind": "status",
            "status": data["status"],
            "error": normalize_error(data.get("error")),
        }


def normalize_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """The loaded error object plus "code": `title`, else a stray `code`, else the `#NNNN` of `type`."""
    if error is None:
        return None
    code = error.get("title") or error.get("code")
    if code is None and "#" in (error.get("type") or ""):
        code = error["type"].rpartition("#")[2]
    return {**error, "code": None if code is None else str(code)}
