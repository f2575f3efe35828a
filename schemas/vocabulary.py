"""Vonage's vocabulary: the channels, statuses and message types it sends, in Vonage's literal strings.

The dispatch tables are checked against it at start; the samples and the body checks use it too.
A value Vonage adds later still loads and reaches a default handler: this is what we know of, not a filter.
"""
CHANNELS = ("sms", "mms", "whatsapp", "messenger", "viber_service", "rcs")

# Messages API statuses, and the SMS API's delivery-receipt statuses, as Vonage documents them.
STATUSES = ("submitted", "delivered", "read", "rejected", "undeliverable")
DLR_STATUSES = ("accepted", "buffered", "delivered", "expired", "failed", "rejected", "unknown")

# Inbound message types per channel in Messages v1, as Vonage documents them.
INBOUND_TYPES: dict[str, tuple[str, ...]] = {
    "sms": ("text",),
    "mms": ("text", "image", "vcard", "audio", "video", "file"),
    "whatsapp": ("text", "image", "audio", "video", "file", "location", "sticker", "reply", "button",
                 "order", "reaction", "contact", "unsupported"),
    "messenger": ("text", "image", "audio", "video", "file", "unsupported"),
    "viber_service": ("text", "image", "video", "file"),
    "rcs": ("text", "image", "video", "file", "location", "reply", "button", "audio", "vcard"),
}
# SMS API inbound `type` values.
SMS_API_TYPES = ("text", "unicode", "binary")

MESSAGE_TYPES = tuple(sorted({t for types in INBOUND_TYPES.values() for t in types} | set(SMS_API_TYPES)))
