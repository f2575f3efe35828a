"""The dispatch tables are checked at start: a mistake is an error naming its line, never a silent fall-through."""
import pytest

import handlers
from devkit import samples
from receiver.operator.signed import marked
from receiver.platform.config import ConfigError
from receiver.worker import dispatch
from tests.conftest import Vonage, compact


def test_the_shipped_tables_pass():
    assert dispatch.problems() == []


@pytest.mark.parametrize("table, key, value, says", [
    ("INBOUND_HANDLERS", "whatsap:text", handlers.on_inbound_text, "'whatsap' is not a channel (did you mean 'whatsapp'?)"),
    ("INBOUND_HANDLERS", "imge", handlers.on_inbound_media, "no message type 'imge' (did you mean 'image'?)"),
    ("INBOUND_HANDLERS", "sms:image", handlers.on_inbound_media, "no message type 'image' on sms"),
    ("STATUS_HANDLERS", "delivred", handlers.on_delivered, "no status 'delivred' (did you mean 'delivered'?)"),
    ("STATUS_HANDLERS", "read", "on_read", "'on_read' is not a function"),
])
def test_a_mistake_in_a_table_stops_the_start_and_says_where(make_app, monkeypatch, table, key, value, says):
    monkeypatch.setitem(getattr(handlers, table), key, value)
    with pytest.raises(ConfigError) as raised:
        make_app()
    assert says in raised.value.message and f"{table}[{key!r}]" in raised.value.message
    assert "handlers/__init__.py line" in raised.value.message


def test_the_line_named_is_the_line_of_the_key():
    with open(handlers.__file__, encoding="utf-8") as f:
        source = f.read().splitlines()
    line = dispatch._line_of("STATUS_HANDLERS", "delivered")
    assert '"delivered": on_delivered' in source[line - 1]


def test_sms_api_types_may_be_keyed_on_the_sms_channel(monkeypatch):
    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "sms:unicode", handlers.on_inbound_text)
    assert dispatch.problems() == []


# -- what a handler gets ---------------------------------------------------------------------------
def test_an_event_carries_the_profile_name_and_what_it_replies_to(vonage, work, calls):
    payload = samples.inbound_message("whatsapp", "text", context_status="available",
                                      context={"message_uuid": "06e2df3a-ab4e", "message_from": "447700900456"})
    vonage.inbound(payload)
    work()
    ((_, event),) = calls
    assert (event.profile_name, event.reply_to, event.test) == ("Priya Shah", "06e2df3a-ab4e", None)


def test_a_triggered_callback_says_so_and_reaches_its_handler(vonage, work, calls):
    vonage.status(marked("message-status", samples.message_status("read", "whatsapp"), "trigger"))
    vonage.sms("delivery-receipt", marked("delivery-receipt", samples.delivery_receipt("delivered"), "trigger"))
    work()
    assert [event.test for _, event in calls] == ["trigger", "trigger"]


def test_the_doctors_callbacks_are_stored_but_reach_no_handler(make_app, calls):
    app = make_app()
    sender, storage = Vonage(app.test_client()), app.extensions["storage"]
    sender.status(marked("message-status", samples.message_status("delivered", client_ref="vonage-doctor"), "doctor"))
    sender.inbound(marked("inbound-message", samples.inbound_message(text="doctor"), "doctor"))
    from receiver.worker.loop import Worker

    assert Worker(storage, app.config, name="w").run_until_idle() == 2
    assert calls == []
    assert {e["note"] for e in storage.reads.events()} == {"doctor's signed test callback: stored, not dispatched"}


def test_an_unsigned_test_mark_is_worth_nothing(client, storage, make_app, calls):
    """An unsigned Messages callback is refused whatever it says. Where the signature is not checked
    (jwt-only: the SMS API; off: everything), anyone can write the mark: such a callback is dispatched
    like any other, and its handler is not told it is a test."""
    from receiver.worker.loop import Worker

    body = b'{"receiver_test":"doctor","message_uuid":"x","status":"read","channel":"sms"}'
    assert client.post("/webhooks/message-status", data=body, content_type="application/json").status_code == 503
    assert storage.reads.events() == []

    jwt_only = make_app(SIGNATURE_VERIFICATION="jwt-only")
    sms = marked("inbound-sms", samples.inbound_sms("stop"), "doctor")
    assert Vonage(jwt_only.test_client()).sms("inbound-sms", sms, sign=False).status_code == 200
    assert Worker(jwt_only.extensions["storage"], jwt_only.config, name="w").run_until_idle() == 1

    off = make_app(SIGNATURE_VERIFICATION="off")
    status = compact(marked("message-status", samples.message_status("read"), "doctor"))
    assert off.test_client().post("/webhooks/message-status", data=status,
                                  content_type="application/json").status_code == 200
    assert Worker(off.extensions["storage"], off.config, name="w").run_until_idle() == 1

    assert [(event.kind, event.test) for _, event in calls] == [("inbound", None), ("status", None)]
