"""The shipped handlers and the dispatch tables. Add a test here for each handler you write."""
import logging

import pytest

import handlers
from receiver import samples
from receiver.dispatch import handler_for
from schemas import load_event


def status_event(status, channel="sms"):
    return load_event("message-status", samples.message_status(status, channel))


def test_every_vonage_status_has_a_handler():
    assert set(samples.STATUSES) | set(samples.DLR_STATUSES) <= set(handlers.STATUS_HANDLERS)


def test_every_inbound_type_reaches_a_handler():
    for channel, types in samples.INBOUND_TYPES.items():
        for message_type in types:
            event = load_event("inbound-message", samples.inbound_message(channel, message_type))
            assert callable(handler_for(event))


@pytest.mark.parametrize("status", samples.STATUSES)
def test_status_handlers_log_one_line(status, caplog):
    event = status_event(status, "whatsapp")
    with caplog.at_level(logging.INFO, logger="handlers"):
        handler_for(event)(event)
    (record,) = caplog.records
    assert event.message_id in record.getMessage() and f"status={status}" in record.getMessage()


@pytest.mark.parametrize("status", samples.DLR_STATUSES)
def test_delivery_receipt_handlers_log_one_line(status, caplog):
    event = load_event("delivery-receipt", samples.delivery_receipt(status))
    with caplog.at_level(logging.INFO, logger="handlers"):
        handler_for(event)(event)
    (record,) = caplog.records
    assert event.message_id in record.getMessage()


def test_unknown_status_is_logged_and_succeeds(caplog):
    event = status_event("teleported")
    assert handler_for(event) is handlers.DEFAULT_STATUS_HANDLER
    with caplog.at_level(logging.WARNING, logger="handlers"):
        handler_for(event)(event)
    assert "teleported" in caplog.text


def test_inbound_text_handler_logs_the_sender_not_the_text(caplog):
    event = load_event("inbound-message", samples.inbound_message("sms", "text", text="my PIN is 1234"))
    with caplog.at_level(logging.INFO, logger="handlers"):
        handler_for(event)(event)
    assert event.from_ in caplog.text and "1234" not in caplog.text
