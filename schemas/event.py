"""The one normalized shape every callback becomes before a handler sees it.

Handlers receive an `Event` and never care which API version or transport brought it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str                      # "status" or "inbound"
    source: str                    # "messages-v1", "messages-v0.1" or "sms-api"
    message_id: str                # Messages message_uuid, or SMS API messageId
    channel: str                   # sms, mms, whatsapp, messenger, viber_service, rcs
    to: str | None = None
    from_: str | None = None       # "from" is a keyword; the raw payload keeps Vonage's name
    timestamp: datetime | None = None   # timezone-aware UTC
    status: str | None = None      # status events: Vonage's literal status value
    message_type: str | None = None     # inbound events: text, image, reply, ... (SMS API: text, unicode, binary)
    text: str | None = None
    content: dict[str, Any] = field(default_factory=dict)   # the message_type's object, e.g. {"image": {...}}
    client_ref: str | None = None  # status events: your reference from the send (inbound: rarely set)
    profile_name: str | None = None  # WhatsApp: the sender's (inbound) or recipient's (status) display name
    reply_to: str | None = None    # inbound: the message_uuid it quotes (WhatsApp, Viber `context`)
    error: dict[str, Any] | None = None  # {"code": "1340", "detail": "...", ...}; DLR: {"code": err-code}
    usage: dict[str, Any] | None = None  # {"price": "0.0057", "currency": "EUR"}
    incomplete: bool = False       # multipart SMS dispatched before every part arrived
    parts: int = 1                 # how many SMS parts this inbound message was joined from
    superseded: bool = False       # status events: a later status was already recorded, so the
                                   # message's status did not move (the event is still dispatched)
    test: str | None = None        # "trigger" or "doctor": a test callback this app's own CLI signed and sent
    raw: dict[str, Any] = field(default_factory=dict)       # the payload as received, unknown fields kept
    event_id: int | None = None    # id of the stored callback
    outbox_id: int | None = None   # status events: the message of ours it is about (GET /api/outbox/<id>)
