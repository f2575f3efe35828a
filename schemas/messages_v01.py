"""Messages API v0.1 ("beta") callbacks, loaded into the same `Event` as v1.

Only translates the legacy shape (to/from objects, `message.content`, `error{code, reason}`); no rules of its own.
"""
from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, post_load

from schemas.content import ContentFields, content_of
from schemas.fields import NOT_EMPTY, Str, Timestamp, TolerantSchema
from schemas.messages_v1 import UsageSchema

SOURCE = "messages-v0.1"
CHANNEL_NAMES = {"viber_service_msg": "viber_service"}  # v0.1 spelling -> v1 spelling


class AddressSchema(TolerantSchema):
    """`{type: <channel>, number: "447..."}` or `{type, id: "..."}` (Messenger, Viber service)."""

    type = Str()
    number = Str()
    id = Str()


class ContentSchema(ContentFields):
    type = Str()


class InboundMessageSchema(TolerantSchema):
    content = fields.Nested(ContentSchema)
    sms = fields.Dict()


class ErrorSchema(TolerantSchema):
    code = Str()  # an integer on the wire; a string here, as in v1
    reason = Str()


class MessageSchema(TolerantSchema):
    """Members common to inbound and status callbacks."""

    message_uuid = Str(required=True, validate=NOT_EMPTY)
    to = fields.Nested(AddressSchema)
    from_ = fields.Nested(AddressSchema, data_key="from")
    timestamp = Timestamp()
    client_ref = Str()
    usage = fields.Nested(UsageSchema)

    @staticmethod
    def common_fields(data: dict[str, Any]) -> dict[str, Any]:
        """The Event arguments both callbacks share; the channel is read from `to.type` or `from.type`."""
        to, from_ = data.get("to") or {}, data.get("from_") or {}
        channel = to.get("type") or from_.get("type")
        if not channel:
            raise ValidationError("The channel must be given as to.type or from.type.", "to")
        return {
            "source": SOURCE,
            "message_id": data["message_uuid"],
            "channel": CHANNEL_NAMES.get(channel, channel),
            "to": to.get("number") or to.get("id"),
            "from_": from_.get("number") or from_.get("id"),
            "timestamp": data.get("timestamp"),
            "client_ref": data.get("client_ref"),
            "usage": data.get("usage"),
        }


class InboundSchema(MessageSchema):
    message = fields.Nested(InboundMessageSchema)

    @post_load
    def event_fields(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        content = (data.get("message") or {}).get("content") or {}
        message_type = content.get("type")
        return {
            **self.common_fields(data),
            "kind": "inbound",
            "message_type": message_type,
            "text": content.get("text"),
            "content": content_of(content, message_type),
        }


class StatusSchema(MessageSchema):
    status = Str(required=True, validate=NOT_EMPTY)
    error = fields.Nested(ErrorSchema)

    @post_load
    def event_fields(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        error = data.get("error")
        if error is not None:
            # "detail" is v1's name for the text, so a handler can read one key whatever the version.
            error = {"code": None, "detail": error.get("reason"), **error}
        return {**self.common_fields(data), "kind": "status", "status": data["status"], "error": error}
