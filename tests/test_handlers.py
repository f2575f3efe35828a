"""The dispatch tables, and how to test a handler. This file is yours: add a test for each handler you write.

Handlers are plain functions of an Event: build one with devkit.samples and schemas.load_event, call
the handler, and assert what it did. Messages it sends are only collected (receiver.sending.collecting),
never sent, so a test runs no side effect of sending; give your own side effects (a CRM, a database) a
fake in the test.
"""
import pytest

import handlers
from devkit import samples
from receiver.sending import collecting
from receiver.worker.dispatch import handler_for
from schemas import load_event


def inbound(channel="sms", message_type="text", **fields):
    return load_event("inbound-message", samples.inbound_message(channel, message_type, **fields), event_id=1)


def test_every_status_vonage_sends_has_a_handler_of_its_own():
    for status in (*samples.STATUSES, *samples.DLR_STATUSES):
        event = load_event("message-status", samples.message_status(status))
        assert handler_for(event) is handlers.STATUS_HANDLERS[status]


def test_a_status_vonage_adds_later_goes_to_the_default_that_succeeds():
    event = load_event("message-status", samples.message_status("teleported"))
    assert handler_for(event) is handlers.DEFAULT_STATUS_HANDLER


def test_every_inbound_type_reaches_a_handler():
    # True of the shipped table and of any table edited as the README says (a "whatsapp:text" key, a
    # handler for "location"): every type reaches the handler its keys name, else the default one.
    table = handlers.INBOUND_HANDLERS
    for channel, types in samples.INBOUND_TYPES.items():
        for message_type in types:
            handler = handler_for(inbound(channel, message_type))
            assert callable(handler)
            named = table.get(f"{channel}:{message_type}", table.get(message_type))
            assert handler is (named or handlers.DEFAULT_INBOUND_HANDLER), (channel, message_type)


def test_a_channel_key_added_as_the_readme_says_keeps_every_type_handled(monkeypatch):
    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "whatsapp:text", handlers.on_inbound)
    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "location", handlers.on_inbound)
    test_every_inbound_type_reaches_a_handler()


def test_a_channel_specific_key_wins(monkeypatch):
    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "whatsapp:reply", handlers.on_inbound)
    assert handler_for(inbound("whatsapp", "reply")) is handlers.on_inbound


@pytest.mark.parametrize("channel", ["sms", "whatsapp", "viber_service"])
def test_with_auto_reply_text_the_text_handler_answers_on_the_same_channel(monkeypatch, channel):
    monkeypatch.setenv("AUTO_REPLY_TEXT", "Thanks, we will get back to you today.")
    event = inbound(channel)
    with collecting() as sent:
        handlers.on_inbound_text(event)
    (reply,) = sent
    assert (reply["channel"], reply["to"], reply["from"]) == (channel, event.from_, event.to)
    assert reply["text"] == "Thanks, we will get back to you today."
    assert ("context" in reply) == (channel != "sms")  # WhatsApp and Viber quote the message answered


def test_without_auto_reply_text_the_text_handler_sends_nothing(monkeypatch):
    monkeypatch.delenv("AUTO_REPLY_TEXT", raising=False)
    with collecting() as sent:
        handlers.on_inbound_text(inbound("whatsapp"))
    assert sent == []


def test_a_handler_reads_the_apps_settings_through_setting(monkeypatch):
    """Inside the worker's dispatch, `setting` is the app's value; outside, the environment's."""
    from receiver.settings import setting
    from receiver.worker.dispatch import dispatch

    seen = []
    monkeypatch.setitem(handlers.STATUS_HANDLERS, "delivered", lambda event: seen.append(
        (setting("AUTO_REPLY_TEXT"), setting("CRM_URL", "none"), setting("MAX_ATTEMPTS"))))
    monkeypatch.setenv("CRM_URL", "https://crm.example")
    monkeypatch.setenv("AUTO_REPLY_TEXT", "from the environment")
    event = load_event("message-status", samples.message_status("delivered"))
    dispatch(event, {"AUTO_REPLY_TEXT": "from create_app", "MAX_ATTEMPTS": 3})
    assert seen == [("from create_app", "https://crm.example", 3)]
    assert setting("AUTO_REPLY_TEXT") == "from the environment" and setting("MAX_ATTEMPTS") == 8
