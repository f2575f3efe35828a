"""What happens for each callback: the dispatch tables. This is the package you edit.

Every handler receives one `schemas.Event` and returns nothing. Raising means "try again later":
the worker retries with backoff, then keeps the event as dead. To answer or send a message, call
`receiver.sending.reply(event, text=...)` or `send(...)`: it is queued only if the handler returns,
and sent once however often the handler runs. To read a setting (AUTO_REPLY_TEXT, or one of your own
from the environment), call `receiver.settings.setting(name, default)`.

Delivery is at least once: a handler may run again for the same callback (after a raise, a replay,
a crash). Key your side effects on `event.event_id`, e.g. INSERT ... ON CONFLICT DO NOTHING.

To add behaviour for a status: write a function in handlers/status.py, point its status at it
below, and add a test in tests/test_handlers.py. A key Vonage never sends, or a value that is not a
function, stops the app at start with the line it is on.
"""
from handlers.inbound import on_inbound, on_inbound_media, on_inbound_text, on_unsupported
from handlers.status import (
    on_accepted,
    on_buffered,
    on_delivered,
    on_expired,
    on_failed,
    on_read,
    on_rejected,
    on_submitted,
    on_undeliverable,
    on_unknown,
    on_unknown_status,
)

# Status value (Vonage's literal string) -> handler. Messages API statuses and SMS API
# delivery-receipt statuses share one table; `event.source` tells them apart when it matters.
STATUS_HANDLERS = {
    "submitted": on_submitted,
    "delivered": on_delivered,
    "read": on_read,
    "rejected": on_rejected,
    "undeliverable": on_undeliverable,
    # SMS API delivery receipts only:
    "accepted": on_accepted,
    "buffered": on_buffered,
    "expired": on_expired,
    "failed": on_failed,
    "unknown": on_unknown,
}

# Inbound message_type -> handler. A "channel:message_type" key (e.g. "whatsapp:reply") wins over
# the plain message_type. SMS API inbound types are text, unicode and binary.
INBOUND_HANDLERS = {
    "text": on_inbound_text,
    "unicode": on_inbound_text,
    "image": on_inbound_media,
    "audio": on_inbound_media,
    "video": on_inbound_media,
    "file": on_inbound_media,
    "vcard": on_inbound_media,
    "sticker": on_inbound_media,
    "unsupported": on_unsupported,
}

# What runs for a status or message type not in the tables above: log and succeed, so a value
# Vonage adds tomorrow never turns into a retry storm.
DEFAULT_STATUS_HANDLER = on_unknown_status
DEFAULT_INBOUND_HANDLER = on_inbound
