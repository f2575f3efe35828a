"""The Messages API request body: build one per channel and message type, and check one as Vonage would.

Pure data, from the sending spec (section 3) and Vonage's SDK models: no I/O, no Flask. The outbox and the
simulator check bodies with the same `validate_message`.
"""
from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import urlsplit

from schemas.vocabulary import CHANNELS

# What each channel can send (the Messages API's request bodies); inbound types are a different list (schemas.vocabulary).
MESSAGE_TYPES = {
    "sms": ("text",),
    "mms": ("image", "vcard", "audio", "video"),
    "whatsapp": ("text", "image", "audio", "video", "file", "template", "sticker", "custom"),
    "messenger": ("text", "image", "audio", "video", "file"),
    "viber_service": ("text", "image", "video", "file"),
    "rcs": ("text", "image", "video", "file", "custom"),
}
TEXT_LIMITS = {"sms": 1000, "whatsapp": 4096, "messenger": 640, "viber_service": 1000, "rcs": 3072}
MEDIA_TYPES = ("image", "audio", "video", "file", "vcard")
# Channels whose options travel in an object named after the channel (`"whatsapp": {"locale": ...}`).
OPTION_CHANNELS = ("sms", "whatsapp", "messenger", "viber_service", "rcs")
PHONE_CHANNELS = ("sms", "mms", "whatsapp", "viber_service", "rcs")  # `to` is E.164 without "+"
WEBHOOK_VERSIONS = ("v1", "v0.1")
CLIENT_REF_MAX = 100
MMS_TTL = (300, 259_200)
OPTION_CHOICES = {  # (channel, option) -> allowed values
    ("sms", "encoding_type"): ("text", "unicode", "auto"),
    ("viber_service", "category"): ("transaction", "promotion"),
    ("messenger", "category"): ("response", "update", "message_tag"),
}
_E164 = re.compile(r"[0-9]{7,15}")
_RCS_AGENT = re.compile(r"[a-zA-Z0-9\-_&]+")


class InvalidMessage(ValueError):
    """A message body Vonage would refuse; `name` is the field at fault ("to", "image.url"), `reason` why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def build_message(
    channel: str,
    message_type: str = "text",
    *,
    to: str,
    from_: str,
    text: str | None = None,
    url: str | None = None,
    caption: str | None = None,
    name: str | None = None,
    template: dict | None = None,
    custom: dict | None = None,
    reply_to: str | None = None,
    options: dict | None = None,
    ttl: int | None = None,
    client_ref: str | None = None,
    webhook_url: str | None = None,
    webhook_version: str | None = None,
    failover: list[dict] | None = None,
    **extra: Any,
) -> dict:
    """A Messages API body for one message, checked by `validate_message`.

    `text` for "text"; `url` (+ `caption`, `name`) for image, audio, video, file, vcard and sticker;
    `template` ({"name", "parameters"}) and `custom` (the channel's own object) for those types.
    `reply_to` is the message_uuid to quote (`context`); `options` the channel's object (`sms`, `whatsapp`
    with locale and policy for a template, `viber_service`, `messenger`, `rcs`); `extra` is added as is.

    :raises InvalidMessage: (a ValueError) what Vonage would refuse.
    """
    body: dict[str, Any] = {"to": to, "from": from_, "channel": channel, "message_type": message_type}
    if message_type == "text":
        body["text"] = text
    elif message_type in (*MEDIA_TYPES, "sticker"):
        body[message_type] = _present({"url": url, "caption": caption, "name": name})
    elif message_type == "template":
        body["template"] = template
    elif message_type == "custom":
        body["custom"] = custom
    if options is not None:
        if channel not in OPTION_CHANNELS:
            raise InvalidMessage("options", f"{channel} has no options object")
        body[channel] = options
    if reply_to is not None:
        body["context"] = {"message_uuid": reply_to}
    body.update(_present({"ttl": ttl, "client_ref": client_ref, "webhook_url": webhook_url,
                          "webhook_version": webhook_version, "failover": failover}))
    body.update(extra)
    return validate_message(body)


def validate_message(body: Any) -> dict:
    """Check a Messages API body as a user would send it; return a normalized copy ("+" dropped from numbers).

    Fields this does not know pass through untouched: Vonage adds options faster than this list.

    :raises InvalidMessage: (a ValueError) naming the first field at fault and why.
    """
    return _validated(body, "", allow_failover=True)


def _validated(body: Any, prefix: str, *, allow_failover: bool) -> dict:
    if not isinstance(body, dict):
        raise InvalidMessage(prefix.rstrip(".") or "(body)", "must be a JSON object")
    body = copy.deepcopy(body)
    channel = _string(body, "channel", prefix)
    if channel not in CHANNELS:
        raise InvalidMessage(prefix + "channel", f"must be one of {', '.join(CHANNELS)}")
    message_type = _string(body, "message_type", prefix)
    if message_type not in MESSAGE_TYPES[channel]:
        raise InvalidMessage(prefix + "message_type",
                             f"{channel} sends {', '.join(MESSAGE_TYPES[channel])}, not {message_type!r:.40}")
    body["to"] = _recipient(body, channel, prefix)
    body["from"] = _sender(body, channel, prefix)
    _check_content(body, channel, message_type, prefix)
    _check_common(body, channel, prefix)
    if "failover" in body:
        if not allow_failover:
            raise InvalidMessage(prefix + "failover", "a failover message cannot have its own failover")
        items = body["failover"]
        if not isinstance(items, list) or not items:
            raise InvalidMessage("failover", "must be a non-empty list of messages")
        body["failover"] = [_validated(item, f"failover[{i}].", allow_failover=False) for i, item in enumerate(items)]
    return body


def _check_content(body: dict, channel: str, message_type: str, prefix: str) -> None:
    if message_type == "text":
        text = _string(body, "text", prefix)
        if len(text) > TEXT_LIMITS[channel]:
            raise InvalidMessage(prefix + "text", f"must be at most {TEXT_LIMITS[channel]} characters on {channel}, "
                                                  f"got {len(text)}")
    elif message_type in MEDIA_TYPES:
        media = _object(body, message_type, prefix)
        _url(media, "url", f"{prefix}{message_type}.")
        for key in ("caption", "name"):
            _optional_string(media, key, f"{prefix}{message_type}.")
    elif message_type == "sticker":
        sticker = _object(body, "sticker", prefix)
        if "id" in sticker:
            _string(sticker, "id", prefix + "sticker.")
        else:
            _url(sticker, "url", prefix + "sticker.")
    elif message_type == "template":
        template = _object(body, "template", prefix)
        _string(template, "name", prefix + "template.")
        if not isinstance(template.get("parameters", []), list):
            raise InvalidMessage(prefix + "template.parameters", "must be a list")
    elif message_type == "custom":
        _object(body, "custom", prefix)


def _check_common(body: dict, channel: str, prefix: str) -> None:
    client_ref = _optional_string(body, "client_ref", prefix)
    if client_ref is not None and len(client_ref) > CLIENT_REF_MAX:
        raise InvalidMessage(prefix + "client_ref",
                             f"must be at most {CLIENT_REF_MAX} characters, got {len(client_ref)}")
    if "webhook_url" in body:
        _url(body, "webhook_url", prefix)
    if "webhook_version" in body and body["webhook_version"] not in WEBHOOK_VERSIONS:
        raise InvalidMessage(prefix + "webhook_version", f"must be one of {', '.join(WEBHOOK_VERSIONS)}")
    if "ttl" in body:
        ttl = body["ttl"]
        low, high = MMS_TTL if channel == "mms" else (1, None)
        if not _is_int(ttl) or ttl < low or (high is not None and ttl > high):
            limits = f"between {low} and {high}" if high else "a positive whole number of"
            raise InvalidMessage(prefix + "ttl", f"must be {limits} seconds")
    if "context" in body:
        _string(_object(body, "context", prefix), "message_uuid", prefix + "context.")
    if channel in OPTION_CHANNELS and channel in body:
        options = _object(body, channel, prefix)
        for (option_channel, option), choices in OPTION_CHOICES.items():
            if option_channel == channel and option in options and options[option] not in choices:
                raise InvalidMessage(f"{prefix}{channel}.{option}", f"must be one of {', '.join(choices)}")
        if channel == "messenger" and options.get("category") == "message_tag":
            _string(options, "tag", prefix + "messenger.")


def _recipient(body: dict, channel: str, prefix: str) -> str:
    to = _string(body, "to", prefix).strip()
    if channel in PHONE_CHANNELS:
        to = to.removeprefix("+")
        if not _E164.fullmatch(to):
            raise InvalidMessage(prefix + "to", "must be a phone number in E.164 format: 7 to 15 digits")
    return to


def _sender(body: dict, channel: str, prefix: str) -> str:
    sender = _string(body, "from", prefix).strip()
    if sender.startswith("+") and sender[1:].isdigit():
        sender = sender[1:]
    if len(sender) > 50:
        raise InvalidMessage(prefix + "from", "must be at most 50 characters")
    if channel == "rcs" and not _RCS_AGENT.fullmatch(sender):
        raise InvalidMessage(prefix + "from", "must be an RCS agent ID: letters, digits, -, _ and &")
    return sender


def _string(parent: dict, key: str, prefix: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidMessage(prefix + key, "is required" if value is None else "must be a non-empty string")
    return value


def _optional_string(parent: dict, key: str, prefix: str) -> str | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidMessage(prefix + key, "must be a string")
    return value


def _object(parent: dict, key: str, prefix: str) -> dict:
    value = parent.get(key)
    if not isinstance(value, dict) or not value:
        raise InvalidMessage(prefix + key, "is required" if value is None else "must be a non-empty object")
    return value


def _url(parent: dict, key: str, prefix: str) -> str:
    value = _string(parent, key, prefix)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidMessage(prefix + key, "must be an http(s) URL")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _present(fields: dict) -> dict:
    return {key: value for key, value in fields.items() if value is not None}
