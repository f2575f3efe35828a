"""Realistic sample callbacks, built from the wire spec: the one place they live (CLI `trigger`, tests).

Pure data: imports nothing from Flask or the plumbing (Vonage's vocabulary comes from schemas). Numbers are fictitious (447700 900xxx).

Every builder takes keyword overrides that replace or add top-level fields:
- Messages payloads: Vonage's names, except `from_` for "from" (a Python keyword).
- SMS API payloads: `client_ref=` means "client-ref" (underscores become hyphens); a literal
  `**{"client-ref": ...}` works too. Values are turned into strings, as the SMS API sends them.
- An override of None removes the field (to build a payload that lacks it).
Each call draws a fresh UUID / messageId and timestamps a few seconds before now.
"""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from schemas.vocabulary import CHANNELS, DLR_STATUSES, STATUSES  # noqa: F401  (the samples' vocabulary)
from schemas.vocabulary import INBOUND_TYPES as KNOWN_TYPES

# The inbound types per channel the samples build: every one Vonage sends, less those whose shape no
# source shows. An MMS with several attachments also carries a `content` list: pass it as an
# override, e.g. content=[{"type": "image", "url": ...}].
_UNSEEN = {("whatsapp", "contact"), ("rcs", "audio"), ("rcs", "vcard")}
INBOUND_TYPES = {channel: tuple(t for t in types if (channel, t) not in _UNSEEN) for channel, types in KNOWN_TYPES.items()}
V01_CHANNEL_NAMES = {"viber_service": "viber_service_msg"}

OUR_NUMBER = "447700900456"
# Who we are on each channel: a number, an alphanumeric sender, a page, a Viber service, an RCS agent.
OUR_IDS = {"messenger": "104395831203986", "viber_service": "16273", "rcs": "acme_rbm_agent"}
STATUS_ERRORS = {  # status -> (code, detail); a whatsapp/messenger rejection is usually the 24 h window
    "rejected": ("1250", "Unroutable - The message could not be routed to the recipient."),
    "undeliverable": ("1100", "Communication failed - The provider could not be reached."),
}
WINDOW_ERROR = ("1340", "Outside of the allowed window - This message is sent outside of allowed response window.")
DLR_ERROR_CODES = {"expired": "2", "failed": "3", "rejected": "14", "unknown": "1"}  # others: "0"


def message_status(status: str, channel: str = "sms", version: str = "v1", **overrides: Any) -> dict[str, Any]:
    """A Messages API status callback for one of our sent messages (v1, or v0.1 with version="v0.1")."""
    payload: dict[str, Any] = {
        "message_uuid": str(uuid.uuid4()),
        "to": _customer(channel),
        "from": OUR_IDS.get(channel, OUR_NUMBER),
        "timestamp": _iso(_recent()),
        "status": status,
        "channel": channel,
        "client_ref": f"order-{random.randint(10000, 99999)}",
    }
    if status in STATUS_ERRORS:
        window = status == "rejected" and channel in ("whatsapp", "messenger")
        code, detail = WINDOW_ERROR if window else STATUS_ERRORS[status]
        payload["error"] = {
            "type": f"https://developer.vonage.com/api-errors/messages#{code}",
            "title": code,
            "detail": detail,
            "instance": uuid.uuid4().hex,
        }
    elif status == "submitted" and channel in ("sms", "mms"):  # SMS and MMS are billed on submission
        payload["usage"] = {"price": "0.0468", "currency": "EUR"}
        payload["destination"] = {"network_code": "23415"}
        if channel == "sms":
            payload["sms"] = {"count_total": "2"}
    elif status == "delivered" and channel not in ("sms", "mms"):  # the others are billed on delivery
        payload["usage"] = {"price": "0.0147", "currency": "EUR"}
        if channel == "whatsapp":
            payload["whatsapp"] = {
                "conversation": {"id": uuid.uuid4().hex, "origin": {"type": "utility"}},
                "pricing": {"type": "regular", "pricing_model": "PMP", "category": "utility"},
            }
    elif status == "read" and channel == "whatsapp":
        payload["profile"] = {"name": "Priya Shah"}
    if version == "v0.1":
        payload = _to_v01(payload)
    return _override(payload, overrides)


def inbound_message(channel: str = "sms", message_type: str = "text", version: str = "v1",
                    **overrides: Any) -> dict[str, Any]:
    """A Messages API inbound message from a customer (v1, or v0.1 with version="v0.1")."""
    payload: dict[str, Any] = {
        "channel": channel,
        "message_uuid": str(uuid.uuid4()),
        "to": OUR_IDS.get(channel, OUR_NUMBER),
        "from": _customer(channel),
        "timestamp": _iso(_recent()),
        "message_type": message_type,
    }
    if message_type == "text":
        payload["text"] = "Hi, is my order 48213 ready for pickup today?"
    elif (type_object := _type_object(message_type, channel)) is not None:
        payload[message_type] = type_object
    if channel == "sms":
        payload["sms"] = {"num_messages": "1", "keyword": "HI"}
        payload["usage"] = {"price": "0.0057", "currency": "EUR"}
    if channel in ("sms", "mms"):
        payload["origin"] = {"network_code": "23415"}
    if channel == "whatsapp":
        payload["profile"] = {"name": "Priya Shah"}
        payload["context_status"] = "none"
    if channel != "sms":
        payload["_self"] = {"href": f"https://api-eu.vonage.com/v1/messages/{payload['message_uuid']}"}
    if version == "v0.1":
        payload = _to_v01(payload)
    return _override(payload, overrides)


def inbound_sms(text: str | None = "Hi, is my order 48213 ready for pickup today?",
                **overrides: Any) -> dict[str, str]:
    """An SMS API inbound SMS; `type` is "unicode" when the text is not plain ASCII, else "text".

    text=None leaves out text, type and keyword, e.g. for a binary SMS:
    `inbound_sms(None, type="binary", data="48656c6c6f", udh="050003cc0201")`.
    """
    payload = {
        "msisdn": _customer("sms"),
        "to": OUR_NUMBER,
        "messageId": _sms_message_id(),
        "api-key": "a1b2c3d4",
        "message-timestamp": _sms_time(_recent()),
    }
    if text is not None:
        payload["text"] = text
        payload["type"] = "text" if text.isascii() else "unicode"
        payload["keyword"] = text.split()[0].upper() if text.split() else ""
    return _override(payload, _hyphenate(overrides))


def inbound_sms_parts(text: str, parts: int, **overrides: Any) -> list[dict[str, str]]:
    """One multipart SMS as `parts` inbound SMS callbacks, in order, whose texts join back into `text`."""
    if not 1 <= parts <= len(text):
        raise ValueError("parts must be between 1 and len(text)")
    size, extra = divmod(len(text), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    shared = {"msisdn": _customer("sms"), "to": OUR_NUMBER, "type": "text" if text.isascii() else "unicode",
              "concat": "true", "concat-ref": str(random.randint(1, 255)), "concat-total": str(parts)}
    start = _recent()
    return [
        inbound_sms(text[bounds[i]:bounds[i + 1]], **{
            **shared,
            "concat-part": str(i + 1),
            "message-timestamp": _sms_time(start + timedelta(seconds=i)),
            **_hyphenate(overrides),
        })
        for i in range(parts)
    ]


def delivery_receipt(status: str = "delivered", **overrides: Any) -> dict[str, str]:
    """An SMS API delivery receipt for one SMS we sent; `err-code` is non-zero for failures."""
    sent = _recent()
    payload = {
        "msisdn": _customer("sms"),  # a DLR's msisdn is the recipient of our SMS
        "to": "AcmeShop",
        "network-code": "23415",
        "messageId": _sms_message_id(),
        "price": "0.03330000",
        "status": status,
        "scts": sent.strftime("%y%m%d%H%M"),
        "err-code": DLR_ERROR_CODES.get(status, "0"),
        "api-key": "a1b2c3d4",
        "client-ref": f"order-{random.randint(10000, 99999)}",
        "message-timestamp": _sms_time(sent),
    }
    return _override(payload, _hyphenate(overrides))


def _type_object(message_type: str, channel: str) -> dict[str, Any] | None:
    """The object an inbound message_type carries; None for text, unsupported and unknown types."""
    media = {"url": f"https://api-eu.vonage.com/v3/media/{uuid.uuid4()}"}
    return {
        "image": {**media, "caption": "damaged box"},
        "audio": {**media, "name": "voice-note.ogg"},
        "video": {**media, "caption": "unboxing", "name": "unboxing.mp4"},
        "file": {**media, "caption": "my invoice", "name": "invoice-1182.pdf"},
        "vcard": {**media, "name": "priya.vcf"},
        "sticker": media,
        "location": {"lat": 51.507351, "long": -0.127758, "name": "Trafalgar Sq", "address": "London WC2N 5DN"},
        "reply": {"id": "slot-0900", "title": "9:00", "description": "Friday 14 March"},
        "button": (  # WhatsApp sends an object payload (e.g. a flow's answers), RCS a string
            {"payload": {"slot": "0900", "confirmed": True}, "text": "Confirm", "subtype": "flow"}
            if channel == "whatsapp" else {"payload": "confirm-booking-48213", "text": "Confirm"}
        ),
        "reaction": {"action": "react", "emoji": "\N{THUMBS UP SIGN}"},
        "order": {
            "catalog_id": "2806150799683508",
            "product_items": [
                {"product_retailer_id": "pk1v7rudbg", "quantity": "2", "item_price": "9.99", "currency": "GBP"},
            ],
        },
    }.get(message_type)


def _to_v01(payload: dict[str, Any]) -> dict[str, Any]:
    """The same callback in the legacy v0.1 shape (Messages webhooks before v1: `to` and `from` are objects)."""
    channel = payload.pop("channel")
    ours = "from" if "status" in payload else "to"

    def address(side: str) -> dict[str, str]:
        # Messenger uses ids on both sides; Viber and RCS use an id for us and a number for the customer.
        by_id = channel == "messenger" or (side == ours and channel in ("viber_service", "rcs"))
        return {"type": V01_CHANNEL_NAMES.get(channel, channel), "id" if by_id else "number": payload.pop(side)}

    legacy: dict[str, Any] = {
        "message_uuid": payload.pop("message_uuid"),
        "timestamp": payload.pop("timestamp"),
        "to": address("to"),
        "from": address("from"),
    }
    if "message_type" in payload:  # inbound: the typed object moves into message.content
        message_type = payload.pop("message_type")
        content: dict[str, Any] = {"type": message_type}
        if message_type in payload:
            content[message_type] = payload.pop(message_type)
        if message_type == "location":  # v0.1 spells the coordinates out, as strings
            location = content["location"]
            location["latitude"], location["longitude"] = str(location.pop("lat")), str(location.pop("long"))
        legacy["message"] = {"content": content}
        if "sms" in payload:
            legacy["message"]["sms"] = {"num_messages": payload.pop("sms")["num_messages"]}
    if "error" in payload:
        error = payload.pop("error")
        legacy["error"] = {"code": int(error["title"]), "reason": error["detail"]}
    for key in ("status", "client_ref", "usage"):
        if key in payload:
            legacy[key] = payload[key]
    return legacy


def _override(payload: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        key = "from" if key == "from_" else key
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def _hyphenate(overrides: dict[str, Any]) -> dict[str, Any]:
    """SMS API names: client_ref -> client-ref; values as strings (None still means "remove")."""
    return {key.replace("_", "-"): None if value is None else str(value) for key, value in overrides.items()}


def _customer(channel: str) -> str:
    if channel == "messenger":
        return str(random.randint(10**15, 10**16 - 1))  # a page-scoped user ID (PSID)
    return f"447700900{random.randint(100, 399)}"  # never OUR_NUMBER


def _recent() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=random.randint(1, 30))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{random.randint(0, 999):03d}Z"


def _sms_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _sms_message_id() -> str:
    return f"{random.getrandbits(64):016X}"


# What a busy account receives: mostly status callbacks, some inbound traffic, SMS API receipts.
# (weight in %, route kind, how the SMS API sends it: "json" for the Messages API)
TRAFFIC_MIX = (
    (40, "message-status", "json"),
    (15, "inbound-message", "json"),
    (8, "inbound-sms", "GET"),
    (4, "inbound-sms", "form"),
    (23, "delivery-receipt", "GET"),
    (10, "delivery-receipt", "form"),
)
_MIX_CHANNELS = ("sms", "sms", "sms", "whatsapp", "whatsapp", "mms", "messenger", "viber_service", "rcs")
_MIX_STATUSES = {"submitted": 35, "delivered": 40, "read": 15, "rejected": 5, "undeliverable": 5}
_MIX_DLR_STATUSES = {"delivered": 70, "accepted": 10, "buffered": 5, "failed": 6, "expired": 4, "rejected": 3,
                     "unknown": 2}


def traffic(count: int, rng: random.Random) -> list[tuple[str, str, dict[str, Any]]]:
    """`count` distinct callbacks in the TRAFFIC_MIX proportions, as (kind, transport, payload).

    For load tests and the benchmark; each caller signs and sends them its own way.
    """
    def pick(weights: dict[str, int]) -> str:
        return rng.choices(list(weights), weights=list(weights.values()))[0]

    out = []
    for _, kind, via in rng.choices(TRAFFIC_MIX, weights=[w for w, _, _ in TRAFFIC_MIX], k=count):
        channel = rng.choice(_MIX_CHANNELS)
        if kind == "message-status":
            status = pick(_MIX_STATUSES)
            if status == "read" and channel in ("sms", "mms"):
                status = "delivered"  # SMS and MMS have no read receipts
            payload = message_status(status, channel)
        elif kind == "inbound-message":
            types = INBOUND_TYPES[channel]
            payload = inbound_message(channel, "text" if rng.random() < 0.7 else rng.choice(types))
        elif kind == "inbound-sms":
            payload = inbound_sms()
        else:
            payload = delivery_receipt(pick(_MIX_DLR_STATUSES))
        out.append((kind, via, payload))
    return out
