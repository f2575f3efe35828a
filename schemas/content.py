"""The per-message_type objects (image, location, reply, ...) shared by Messages v1 and v0.1.

Shapes only: these schemas check types and keep unknown members; they never require a member.
"""
from __future__ import annotations

from typing import Any

from marshmallow import fields, pre_load

from schemas.fields import Str, TolerantSchema


class MediaSchema(TolerantSchema):
    """image, audio, video, file, vcard and sticker: a short-lived URL plus optional labels."""

    url = Str()
    caption = Str()
    name = Str()


class LocationSchema(TolerantSchema):
    """Always loads as `lat`/`long` floats, whether sent as v1 numbers or v0.1 `latitude`/`longitude` strings."""

    lat = fields.Float()
    long = fields.Float()
    name = Str()
    address = Str()
    url = Str()

    @pre_load
    def rename_coordinates(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data  # let marshmallow report the wrong type
        data = dict(data)
        for long_name, short_name in (("latitude", "lat"), ("longitude", "long")):
            if long_name in data:
                data.setdefault(short_name, data.pop(long_name))
        return data


class ReplySchema(TolerantSchema):
    id = Str()
    title = Str()
    description = Str()


class ButtonSchema(TolerantSchema):
    payload = fields.Raw()  # an object on WhatsApp (e.g. a flow's answers), a string on RCS
    text = Str()
    subtype = Str()


class ReactionSchema(TolerantSchema):
    action = Str()  # "react" or "unreact"
    emoji = Str()


class ProductItemSchema(TolerantSchema):
    product_retailer_id = Str()
    quantity = Str()
    item_price = Str()
    currency = Str()


class OrderSchema(TolerantSchema):
    catalog_id = Str()
    product_items = fields.List(fields.Nested(ProductItemSchema))


class AttachmentSchema(TolerantSchema):
    """One entry of an MMS `content[]` list (sent when a message carries several attachments)."""

    type = Str()
    url = Str()
    caption = Str()


class ContentFields(TolerantSchema):
    """Mixed into a schema whose payload carries the message_type's object as a sibling member."""

    text = Str()
    image = fields.Nested(MediaSchema)
    audio = fields.Nested(MediaSchema)
    video = fields.Nested(MediaSchema)
    file = fields.Nested(MediaSchema)
    vcard = fields.Nested(MediaSchema)
    sticker = fields.Nested(MediaSchema)
    location = fields.Nested(LocationSchema)
    reply = fields.Nested(ReplySchema)
    button = fields.Nested(ButtonSchema)
    reaction = fields.Nested(ReactionSchema)
    order = fields.Nested(OrderSchema)
    content = fields.List(fields.Nested(AttachmentSchema))


def content_of(data: dict[str, Any], message_type: str | None) -> dict[str, Any]:
    """Event.content: the loaded object named by message_type, plus an MMS `content[]` list if present.

    A future message_type still works: its object is kept by INCLUDE and picked here by name.
    """
    return {
        key: data[key]
        for key in (message_type, "content")
        if key in data and isinstance(data[key], (dict, list))
    }
