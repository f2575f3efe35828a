"""schemas.load_event: every sample and every spec example loads into the right Event; bad input raises."""
import copy
import json
from datetime import datetime, timedelta, timezone

import pytest

from devkit import samples
from schemas import Event, InvalidPayload, load_event

UTC = timezone.utc
V01_TYPES = ("text", "image", "audio", "video", "file", "location", "unsupported")  # the v0.1 message types
NO_OBJECT_TYPES = ("text", "unsupported")


def without(payload: dict, key: str) -> dict:
    del payload[key]
    return payload


def is_recent(moment: datetime) -> bool:
    return moment.tzinfo is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=2)


# --- samples ---------------------------------------------------------------

INBOUND_CASES = [(c, t) for c, types in samples.INBOUND_TYPES.items() for t in types]
V01_INBOUND_CASES = [(c, t) for c, t in INBOUND_CASES if t in V01_TYPES]
STATUS_CASES = [(s, c) for s in samples.STATUSES for c in samples.CHANNELS]


@pytest.mark.parametrize("channel, message_type", INBOUND_CASES)
def test_v1_inbound_sample_loads(channel, message_type):
    payload = samples.inbound_message(channel, message_type)
    event = load_event("inbound-message", payload)
    assert (event.kind, event.source, event.channel) == ("inbound", "messages-v1", channel)
    assert (event.message_id, event.to, event.from_) == (payload["message_uuid"], payload["to"], payload["from"])
    assert event.message_type == message_type
    assert event.text == payload.get("text")
    assert set(event.content) == (set() if message_type in NO_OBJECT_TYPES else {message_type})
    assert is_recent(event.timestamp)
    assert event.raw is payload


@pytest.mark.parametrize("channel, message_type", V01_INBOUND_CASES)
def test_v01_inbound_sample_loads(channel, message_type):
    payload = samples.inbound_message(channel, message_type, version="v0.1")
    event = load_event("inbound-message", payload)
    assert (event.kind, event.source, event.channel) == ("inbound", "messages-v0.1", channel)
    assert event.message_id == payload["message_uuid"]
    assert event.to == payload["to"].get("number", payload["to"].get("id"))
    assert event.from_ == payload["from"].get("number", payload["from"].get("id"))
    assert event.message_type == message_type
    assert set(event.content) == (set() if message_type in NO_OBJECT_TYPES else {message_type})
    assert is_recent(event.timestamp)


@pytest.mark.parametrize("version", ["v1", "v0.1"])
@pytest.mark.parametrize("status, channel", STATUS_CASES)
def test_status_sample_loads(status, channel, version):
    payload = samples.message_status(status, channel, version=version)
    event = load_event("message-status", payload)
    assert (event.kind, event.source) == ("status", f"messages-{version}")
    assert (event.channel, event.status, event.message_id) == (channel, status, payload["message_uuid"])
    assert event.client_ref == payload["client_ref"]
    assert is_recent(event.timestamp)


@pytest.mark.parametrize("version", ["v1", "v0.1"])
@pytest.mark.parametrize("status", ["rejected", "undeliverable"])
def test_failed_status_sample_has_string_error_code(status, version):
    event = load_event("message-status", samples.message_status(status, "whatsapp", version=version))
    assert event.error["code"].isdigit()
    assert event.error["detail"]


@pytest.mark.parametrize("status", ["submitted", "delivered", "read"])
def test_successful_status_sample_has_no_error(status):
    assert load_event("message-status", samples.message_status(status)).error is None


def test_sms_submitted_sample_carries_usage():
    event = load_event("message-status", samples.message_status("submitted", "sms"))
    assert event.usage == {"price": "0.0468", "currency": "EUR"}


def test_inbound_sms_sample_loads():
    payload = samples.inbound_sms("Running 10 min late")
    event = load_event("inbound-sms", payload)
    assert (event.kind, event.source, event.channel) == ("inbound", "sms-api", "sms")
    assert (event.message_id, event.from_, event.to) == (payload["messageId"], payload["msisdn"], payload["to"])
    assert (event.message_type, event.text, event.content) == ("text", "Running 10 min late", {})
    assert is_recent(event.timestamp)


def test_unicode_inbound_sms_sample_loads():
    event = load_event("inbound-sms", samples.inbound_sms("Café at 5? ☕"))
    assert (event.message_type, event.text) == ("unicode", "Café at 5? ☕")


def test_binary_inbound_sms_content_holds_data_and_udh():
    payload = samples.inbound_sms(None, type="binary", data="48656c6c6f", udh="050003cc0201")
    event = load_event("inbound-sms", payload)
    assert (event.message_type, event.text) == ("binary", None)
    assert event.content == {"data": "48656c6c6f", "udh": "050003cc0201"}


def test_inbound_sms_parts_load_with_concat_fields_kept_in_raw():
    parts = samples.inbound_sms_parts("Hello from a long message", 3)
    events = [load_event("inbound-sms", part) for part in parts]
    assert "".join(e.text for e in events) == "Hello from a long message"
    assert [e.raw["concat-part"] for e in events] == ["1", "2", "3"]
    assert {e.raw["concat-ref"] for e in events} == {parts[0]["concat-ref"]}
    assert all(e.raw["concat-total"] == "3" for e in events)


def test_a_delivery_receipt_without_status_is_dispatched_as_unknown():
    # Vonage's .NET SDK fixture TestDlrStructNoStatus: a receipt with every field but status.
    payload = {k: v for k, v in samples.delivery_receipt("delivered").items() if k != "status"}
    event = load_event("delivery-receipt", payload)
    assert (event.kind, event.status, event.message_id) == ("status", "unknown", payload["messageId"])


@pytest.mark.parametrize("status", samples.DLR_STATUSES)
def test_delivery_receipt_sample_loads(status):
    payload = samples.delivery_receipt(status)
    event = load_event("delivery-receipt", payload)
    assert (event.kind, event.source, event.channel, event.status) == ("status", "sms-api", "sms", status)
    assert (event.message_id, event.to, event.from_) == (payload["messageId"], payload["msisdn"], payload["to"])
    assert event.client_ref == payload["client-ref"]
    assert event.usage == {"price": payload["price"]}
    assert event.error == (None if payload["err-code"] == "0" else {"code": payload["err-code"]})
    assert is_recent(event.timestamp)


# --- the spec's literal examples (sections 2.9, 3.2, 5.4) ------------------

SPEC_V1_INBOUND_SMS = """{
  "channel": "sms",
  "message_uuid": "f9092e3b-0cd5-42d6-9649-0d86a38f0e7c",
  "to": "447700900456",
  "from": "447700900123",
  "timestamp": "2025-03-14T09:26:53.412Z",
  "message_type": "text",
  "text": "Hi, is my order 48213 ready for pickup today? I can come by after 5pm if that works.",
  "sms": { "num_messages": "1", "keyword": "HI" },
  "usage": { "price": "0.0057", "currency": "EUR" },
  "origin": { "network_code": "23415" }
}"""

SPEC_V1_WHATSAPP_QUOTE = """{
  "channel": "whatsapp",
  "message_uuid": "bdeb0d5b-b374-4dee-8469-00d1904da369",
  "to": "447700900456",
  "from": "447700900789",
  "timestamp": "2025-03-14T10:02:11Z",
  "message_type": "text",
  "text": "Yes please, book the 9am slot",
  "profile": { "name": "Priya Shah" },
  "context_status": "available",
  "context": {
    "message_uuid": "06e2df3a-ab4e-47ee-acd1-933da3b823ac",
    "message_from": "447700900456"
  },
  "_self": { "href": "https://api-eu.vonage.com/v1/messages/bdeb0d5b-b374-4dee-8469-00d1904da369" }
}"""

SPEC_V1_WHATSAPP_REPLY = """{
  "channel": "whatsapp",
  "message_uuid": "b371e244-23a9-4286-bb93-686f99e1deed",
  "to": "447700900456",
  "from": "447700900789",
  "timestamp": "2025-03-14T10:05:40Z",
  "message_type": "reply",
  "reply": { "id": "slot-0900", "title": "9:00", "description": "Friday 14 March" },
  "profile": { "name": "Priya Shah" },
  "context_status": "none",
  "whatsapp": {
    "referral": {
      "source_type": "ad",
      "source_id": "120210987654321",
      "source_url": "https://fb.me/3xAmPl3",
      "headline": "Spring service offer",
      "body": "Book a 20% off check-up",
      "media_type": "image",
      "image_url": "https://example.com/ad/spring.jpg",
      "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ"
    }
  }
}"""

SPEC_V1_INBOUND_OTHERS = """[
  {"channel":"mms","message_uuid":"be4b1630-1235-47c5-aadd-787198ca5f87","to":"12015550123","from":"12015550187","timestamp":"2025-03-14T15:20:03Z","message_type":"image","image":{"url":"https://api-us.nexmo.com/v3/media/3c1f0b0e-6a2d-4d9e-9b1a-5a7c2e8d4f10","caption":"damaged box"},"origin":{"network_code":"310260"}},
  {"channel":"messenger","message_uuid":"b3cad53f-3f21-4a0d-8fce-4826eec1d365","to":"104395831203986","from":"6398214550918273","timestamp":"2025-03-14T15:21:44Z","message_type":"file","file":{"url":"https://api-eu.vonage.com/v3/media/8d0e5b4a-2f7c-4e61-a3d9-0c6b9e1f2a77","name":"invoice-1182.pdf"}},
  {"channel":"viber_service","message_uuid":"c489ec92-4dd2-46ea-9ff6-aa645ec10269","to":"16273","from":"447700900321","timestamp":"2025-03-14T15:22:09Z","message_type":"text","text":"Stop promos please","context":{"message_uuid":"41d8b4bc-8621-4cb1-b8e8-f58832c46b4e"}},
  {"channel":"rcs","message_uuid":"6ac6d38d-fad0-46b0-b8c6-4ca0333ed4fd","to":"acme_rbm_agent","from":"447700900654","timestamp":"2025-03-14T15:23:30Z","message_type":"button","button":{"payload":"confirm-booking-48213","text":"Confirm"}}
]"""

SPEC_V1_STATUSES = """[
  {"message_uuid":"179ebb4b-6949-4a44-8662-b399898bc60e","to":"447700900123","from":"AcmeShop","timestamp":"2025-03-14T09:30:01.117Z","status":"submitted","channel":"sms","client_ref":"order-48213","usage":{"price":"0.0468","currency":"EUR"},"destination":{"network_code":"23415"},"sms":{"count_total":"2"}},
  {"message_uuid":"b8e2eae3-cd6d-4860-9bfe-18e165d22f26","to":"447700900789","from":"447700900456","timestamp":"2025-03-14T10:07:55Z","status":"read","channel":"whatsapp","profile":{"name":"Priya Shah"}},
  {"message_uuid":"0f77d9de-357c-4cea-9060-c0e9c3615694","to":"447700900999","from":"447700900456","timestamp":"2025-03-14T10:08:02Z","status":"rejected","channel":"whatsapp","client_ref":"reminder-7781","error":{"type":"https://developer.vonage.com/api-errors/messages#1340","title":"1340","detail":"Outside of the allowed window - This message is sent outside of allowed response window.","instance":"7bdb6b77c1b8e1b6bebe09720c781242"}}
]"""

SPEC_V1_WHATSAPP_DELIVERED = """{
  "message_uuid": "17af74c6-6e13-4b82-b032-351bd1d4b8dc",
  "to": "447700900789",
  "from": "447700900456",
  "timestamp": "2025-03-14T10:07:20Z",
  "status": "delivered",
  "channel": "whatsapp",
  "usage": { "price": "0.0147", "currency": "EUR" },
  "whatsapp": {
    "conversation": { "id": "f0a3c2b1d4e5a6b7c8d9e0f1a2b3c4d5", "origin": { "type": "utility" } },
    "pricing": { "type": "regular", "pricing_model": "PMP", "category": "utility" }
  }
}"""

SPEC_V01 = """[
  {"message_uuid":"be0d2b7a-a344-4885-b3ea-87568ecf983b","timestamp":"2025-03-14T11:00:00.000Z","to":{"type":"whatsapp","number":"447700900456"},"from":{"type":"whatsapp","number":"447700900789"},"message":{"content":{"type":"location","location":{"latitude":"51.507351","longitude":"-0.127758","name":"Trafalgar Sq","address":"London WC2N 5DN"}}}},
  {"message_uuid":"f9092e3b-0cd5-42d6-9649-0d86a38f0e7c","timestamp":"2025-03-14T11:01:10.000Z","to":{"type":"sms","number":"447700900456"},"from":{"type":"sms","number":"447700900123"},"message":{"content":{"type":"text","text":"Running 10 min late"},"sms":{"num_messages":"1"}},"usage":{"currency":"EUR","price":"0.0057"}},
  {"message_uuid":"06e2df3a-ab4e-47ee-acd1-933da3b823ac","to":{"type":"messenger","id":"6398214550918273"},"from":{"type":"messenger","id":"104395831203986"},"timestamp":"2025-03-14T11:02:00.000Z","status":"rejected","error":{"code":1340,"reason":"Outside of the allowed window"},"client_ref":"fb-7781"}
]"""

# Section 5.4: the GET and form examples as the caller hands them over (decoded strings).
SPEC_SMS_GET = {
    "msisdn": "447700900123", "to": "447700900456", "messageId": "0A0000001A2B3C4D", "text": "Hi & welcome=yes",
    "type": "text", "keyword": "HI", "api-key": "a1b2c3d4", "message-timestamp": "2025-03-14 09:26:53",
    "timestamp": "1741944413", "nonce": "6f1c2a0e-9d3b-4c5e-8a71-2b4d6e8f0a13", "sig": "<hex>",
}
SPEC_SMS_FORM_PART = {
    "msisdn": "447700900123", "to": "447700900456", "messageId": "0B00000087B68DB3", "type": "unicode",
    "text": "…continues here", "keyword": "…CONTINUES", "api-key": "a1b2c3d4",
    "message-timestamp": "2025-03-14 09:27:02", "concat": "true", "concat-ref": "117", "concat-total": "3",
    "concat-part": "2",
}
SPEC_SMS_BINARY = """{"api-key":"a1b2c3d4","msisdn":"447700900123","to":"447700900456","messageId":"0B00000087B68DB4","type":"binary","data":"48656c6c6f","udh":"050003cc0201","message-timestamp":"2025-03-14 09:28:40"}"""
SPEC_DLR_DELIVERED = """{"msisdn":"447700900123","to":"AcmeShop","network-code":"23415","messageId":"0A0000002F3E4D5C","price":"0.03330000","status":"delivered","scts":"2503140931","err-code":"0","api-key":"a1b2c3d4","client-ref":"order-48213","message-timestamp":"2025-03-14 09:31:07"}"""
SPEC_DLR_FAILED = {
    "msisdn": "447700900999", "to": "447700900456", "network-code": "23410", "messageId": "0A0000002F3E4D60",
    "price": "0.03330000", "status": "failed", "scts": "2503141002", "err-code": "3", "api-key": "a1b2c3d4",
    "message-timestamp": "2025-03-14 10:02:15", "timestamp": "1741946535",
    "nonce": "2c9d1e4f-7a3b-4f0c-9e58-1b6d3a7c8e21", "sig": "<hex>",
}


def test_spec_v1_inbound_sms():
    event = load_event("inbound-message", json.loads(SPEC_V1_INBOUND_SMS))
    assert (event.source, event.channel, event.message_type) == ("messages-v1", "sms", "text")
    assert (event.to, event.from_) == ("447700900456", "447700900123")
    assert event.text.startswith("Hi, is my order 48213")
    assert event.usage == {"price": "0.0057", "currency": "EUR"}
    assert event.timestamp == datetime(2025, 3, 14, 9, 26, 53, 412000, tzinfo=UTC)


def test_spec_v1_whatsapp_quote_keeps_context_in_raw():
    event = load_event("inbound-message", json.loads(SPEC_V1_WHATSAPP_QUOTE))
    assert (event.channel, event.text) == ("whatsapp", "Yes please, book the 9am slot")
    assert event.raw["context"]["message_uuid"] == "06e2df3a-ab4e-47ee-acd1-933da3b823ac"


def test_spec_v1_whatsapp_reply():
    event = load_event("inbound-message", json.loads(SPEC_V1_WHATSAPP_REPLY))
    assert event.message_type == "reply"
    assert event.content == {"reply": {"id": "slot-0900", "title": "9:00", "description": "Friday 14 March"}}


@pytest.mark.parametrize("payload", json.loads(SPEC_V1_INBOUND_OTHERS), ids=lambda p: p["channel"])
def test_spec_v1_inbound_other_channels(payload):
    event = load_event("inbound-message", payload)
    assert (event.channel, event.message_type, event.message_id) == (
        payload["channel"], payload["message_type"], payload["message_uuid"])
    if payload["message_type"] != "text":
        assert event.content == {payload["message_type"]: payload[payload["message_type"]]}


@pytest.mark.parametrize("payload", json.loads(SPEC_V1_STATUSES), ids=lambda p: p["status"])
def test_spec_v1_statuses(payload):
    event = load_event("message-status", payload)
    assert (event.status, event.channel, event.to, event.from_) == (
        payload["status"], payload["channel"], payload["to"], payload["from"])
    assert event.client_ref == payload.get("client_ref")


def test_spec_v1_rejected_error_is_normalized():
    event = load_event("message-status", json.loads(SPEC_V1_STATUSES)[2])
    assert event.error["code"] == "1340"
    assert event.error["detail"].startswith("Outside of the allowed window")
    assert event.error["instance"] == "7bdb6b77c1b8e1b6bebe09720c781242"


def test_spec_v1_whatsapp_delivered():
    event = load_event("message-status", json.loads(SPEC_V1_WHATSAPP_DELIVERED))
    assert (event.status, event.usage) == ("delivered", {"price": "0.0147", "currency": "EUR"})
    assert event.raw["whatsapp"]["pricing"]["category"] == "utility"


def test_spec_v01_location():
    event = load_event("inbound-message", json.loads(SPEC_V01)[0])
    assert (event.source, event.channel, event.message_type) == ("messages-v0.1", "whatsapp", "location")
    assert (event.to, event.from_) == ("447700900456", "447700900789")
    assert event.content == {"location": {"lat": 51.507351, "long": -0.127758, "name": "Trafalgar Sq",
                                          "address": "London WC2N 5DN"}}


def test_spec_v01_sms_text():
    event = load_event("inbound-message", json.loads(SPEC_V01)[1])
    assert (event.channel, event.message_type, event.text) == ("sms", "text", "Running 10 min late")
    assert event.usage == {"currency": "EUR", "price": "0.0057"}
    assert event.timestamp == datetime(2025, 3, 14, 11, 1, 10, tzinfo=UTC)


def test_spec_v01_rejected_status():
    event = load_event("message-status", json.loads(SPEC_V01)[2])
    assert (event.source, event.channel, event.status) == ("messages-v0.1", "messenger", "rejected")
    assert (event.to, event.from_, event.client_ref) == ("6398214550918273", "104395831203986", "fb-7781")
    assert event.error["code"] == "1340"
    assert event.error["detail"] == event.error["reason"] == "Outside of the allowed window"


def test_spec_sms_get():
    event = load_event("inbound-sms", SPEC_SMS_GET)
    assert (event.from_, event.to, event.message_id) == ("447700900123", "447700900456", "0A0000001A2B3C4D")
    assert (event.message_type, event.text) == ("text", "Hi & welcome=yes")
    assert event.timestamp == datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


def test_spec_sms_form_part():
    event = load_event("inbound-sms", SPEC_SMS_FORM_PART)
    assert (event.message_type, event.text) == ("unicode", "…continues here")
    assert (event.raw["concat-ref"], event.raw["concat-part"], event.raw["concat-total"]) == ("117", "2", "3")


def test_spec_sms_binary():
    event = load_event("inbound-sms", json.loads(SPEC_SMS_BINARY))
    assert (event.message_type, event.content) == ("binary", {"data": "48656c6c6f", "udh": "050003cc0201"})


def test_spec_dlr_delivered():
    event = load_event("delivery-receipt", json.loads(SPEC_DLR_DELIVERED))
    assert (event.status, event.to, event.from_) == ("delivered", "447700900123", "AcmeShop")
    assert (event.error, event.usage, event.client_ref) == (None, {"price": "0.03330000"}, "order-48213")
    assert event.timestamp == datetime(2025, 3, 14, 9, 31, 7, tzinfo=UTC)


def test_spec_dlr_failed():
    event = load_event("delivery-receipt", SPEC_DLR_FAILED)
    assert (event.status, event.error, event.client_ref) == ("failed", {"code": "3"}, None)


# --- tolerance -------------------------------------------------------------

def test_unknown_fields_are_kept_in_raw():
    payload = samples.inbound_message("whatsapp", "image", brand_new={"x": 1})
    payload["image"]["blurhash"] = "LEHV6nWB2y"
    event = load_event("inbound-message", payload)
    assert event.raw["brand_new"] == {"x": 1}
    assert event.content["image"]["blurhash"] == "LEHV6nWB2y"


def test_raw_is_left_unchanged():
    payload = samples.inbound_message("whatsapp", "location", version="v0.1")
    before = copy.deepcopy(payload)
    assert load_event("inbound-message", payload).raw == before


@pytest.mark.parametrize("kind, payload", [
    ("message-status", samples.message_status("brand_new_status")),
    ("message-status", samples.message_status("delivered", "brand_new_channel")),
    ("message-status", samples.message_status("delivered", "brand_new_channel", version="v0.1")),
    ("inbound-message", samples.inbound_message("whatsapp", "contact", contact={"name": "Ann"})),
    ("inbound-message", samples.inbound_message("brand_new_channel", "text")),
    ("inbound-sms", samples.inbound_sms(type="brand_new_type")),
    ("delivery-receipt", samples.delivery_receipt("brand_new_status")),
], ids=["v1-status", "v1-channel", "v01-channel", "message_type", "inbound-channel", "sms-type", "dlr-status"])
def test_future_values_load(kind, payload):
    assert load_event(kind, payload).raw is payload


def test_unknown_message_type_object_becomes_content():
    event = load_event("inbound-message", samples.inbound_message("whatsapp", "contact", contact={"name": "Ann"}))
    assert event.content == {"contact": {"name": "Ann"}}


def test_v01_viber_channel_is_renamed():
    event = load_event("inbound-message", samples.inbound_message("viber_service", version="v0.1"))
    assert event.channel == "viber_service"
    assert event.to == samples.OUR_IDS["viber_service"]


def test_v1_sms_without_message_type_is_text():
    payload = samples.inbound_message("sms")
    del payload["message_type"]
    assert load_event("inbound-message", payload).message_type == "text"


def test_mms_attachment_list_becomes_content():
    attachments = [{"type": "image", "url": "https://example.com/a.jpg"},
                   {"type": "video", "url": "https://example.com/b.mp4", "caption": "b"}]
    event = load_event("inbound-message", samples.inbound_message("mms", "image", content=attachments))
    assert event.content["content"] == attachments
    assert "image" in event.content


def test_v1_location_may_use_latitude_longitude():
    location = {"latitude": "51.5", "longitude": -0.12, "name": "Here"}
    event = load_event("inbound-message", samples.inbound_message("whatsapp", "location", location=location))
    assert event.content == {"location": {"lat": 51.5, "long": -0.12, "name": "Here"}}


@pytest.mark.parametrize("payload", [{"slot": "0900", "confirmed": True}, "confirm-booking-48213"])
def test_button_payload_may_be_object_or_string(payload):
    button = {"payload": payload, "text": "Confirm"}
    event = load_event("inbound-message", samples.inbound_message("rcs", "button", button=button))
    assert event.content["button"]["payload"] == payload


def test_error_title_may_be_a_number():
    payload = samples.message_status("rejected", "whatsapp")
    payload["error"]["title"] = 1340
    assert load_event("message-status", payload).error["code"] == "1340"


def test_error_without_title_takes_code_from_type_url():
    payload = samples.message_status("rejected", "whatsapp")
    del payload["error"]["title"]
    assert load_event("message-status", payload).error["code"] == "1340"


@pytest.mark.parametrize("usage", [{"price": 0.0468, "currency": "EUR"}, {"price": "0.0468", "currency": "EUR"}])
def test_price_may_be_number_or_string(usage):
    event = load_event("message-status", samples.message_status("submitted", usage=usage))
    assert event.usage["price"] == "0.0468"


def test_sms_values_may_be_json_numbers():
    payload = samples.inbound_sms_parts("Hello there", 2)[0]
    payload.update({"msisdn": 447700900123, "to": 447700900456, "concat-total": 2, "concat-part": 1})
    event = load_event("inbound-sms", payload)
    assert (event.from_, event.to) == ("447700900123", "447700900456")


def test_workflow_spellings_all_load():
    workflow = {"id": "w1", "workflow_id": "w1", "item_number": 1, "items_number": "1", "items_total": "2",
                "total_items": 2}
    assert load_event("message-status", samples.message_status("rejected", workflow=workflow)).raw["workflow"]


def test_null_optional_fields_load():
    payload = samples.message_status("delivered", client_ref=None)
    payload.update(client_ref=None, usage=None, error=None)
    event = load_event("message-status", payload)
    assert (event.client_ref, event.usage, event.error) == (None, None, None)


@pytest.mark.parametrize("value", [
    "2025-03-14T09:26:53Z",
    "2025-03-14T09:26:53.000Z",
    "2025-03-14T09:26:53.000000123Z",
    "2025-03-14T09:26:53+00:00",
    "2025-03-14T10:26:53+01:00",
    "2025-03-14T04:26:53-0500",
    "2025-03-14T09:26:53",
    "2025-03-14 09:26:53 UTC",
    "2025-03-14 09:26:53",
])
def test_timestamp_formats_parse_to_aware_utc(value):
    event = load_event("message-status", samples.message_status("delivered", timestamp=value))
    assert event.timestamp == datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(0)


def test_sms_timestamp_parses_to_aware_utc():
    event = load_event("delivery-receipt", samples.delivery_receipt(message_timestamp="2025-03-14 09:26:53"))
    assert event.timestamp == datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


def test_missing_timestamp_loads_as_none():
    assert load_event("message-status", samples.message_status("delivered", timestamp=None)).timestamp is None


# --- broken input ----------------------------------------------------------

KINDS = ("message-status", "inbound-message", "inbound-sms", "delivery-receipt")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("payload", [[], "text", None, 42], ids=["list", "str", "none", "int"])
def test_non_object_payload_is_invalid(kind, payload):
    with pytest.raises(InvalidPayload) as info:
        load_event(kind, payload)
    assert info.value.errors == {"_schema": ["Invalid input type: expected a JSON object."]}


@pytest.mark.parametrize("kind, payload, field", [
    ("message-status", samples.message_status("delivered", message_uuid=None), "message_uuid"),
    ("message-status", samples.message_status("delivered", version="v0.1", message_uuid=None), "message_uuid"),
    ("inbound-message", samples.inbound_message(message_uuid=None), "message_uuid"),
    ("inbound-message", samples.inbound_message(message_uuid=""), "message_uuid"),
    ("inbound-message", samples.inbound_message(version="v0.1", message_uuid=None), "message_uuid"),
    ("message-status", without(samples.message_status("delivered"), "status"), "status"),
    ("message-status", without(samples.message_status("delivered", version="v0.1"), "status"), "status"),
    ("message-status", samples.message_status(None), "status"),
    ("message-status", without(samples.message_status("delivered"), "channel"), "channel"),
    ("inbound-sms", samples.inbound_sms(messageId=None), "messageId"),
    ("delivery-receipt", samples.delivery_receipt(messageId=None), "messageId"),
], ids=["v1-status-uuid", "v01-status-uuid", "v1-inbound-uuid", "empty-uuid", "v01-inbound-uuid",
        "v1-status", "v01-status", "v1-status-null", "v1-channel", "sms-id", "dlr-id"])
def test_missing_required_field_is_invalid(kind, payload, field):
    with pytest.raises(InvalidPayload) as info:
        load_event(kind, payload)
    assert field in info.value.errors


@pytest.mark.parametrize("kind, payload, field", [
    ("inbound-message", samples.inbound_message("whatsapp", "image", image=[]), "image"),
    ("inbound-message", samples.inbound_message("whatsapp", "location", location="51.5,-0.1"), "location"),
    ("message-status", samples.message_status("rejected", error=["1340"]), "error"),
    ("message-status", samples.message_status("delivered", usage="0.01"), "usage"),
    ("message-status", samples.message_status("delivered", to=["447700900123"]), "to"),
    ("message-status", samples.message_status("delivered", timestamp="yesterday"), "timestamp"),
    ("message-status", samples.message_status("delivered", timestamp=1741944413), "timestamp"),
    ("inbound-message", samples.inbound_message(version="v0.1", message={"content": []}), "message"),
    ("inbound-sms", samples.inbound_sms(**{"concat-total": "three"}), "concat-total"),
], ids=["image-list", "location-str", "error-list", "usage-str", "to-list", "timestamp-text",
        "timestamp-int", "v01-content-list", "concat-total"])
def test_uncoercible_value_is_invalid(kind, payload, field):
    with pytest.raises(InvalidPayload) as info:
        load_event(kind, payload)
    assert field in info.value.errors


def test_v01_without_any_channel_is_invalid():
    payload = samples.inbound_message(version="v0.1")
    del payload["to"]["type"], payload["from"]["type"]
    with pytest.raises(InvalidPayload) as info:
        load_event("inbound-message", payload)
    assert "to" in info.value.errors


def test_invalid_payload_is_a_value_error():
    assert issubclass(InvalidPayload, ValueError)


def test_unknown_kind_raises_key_error():
    with pytest.raises(KeyError):
        load_event("voice-answer", samples.message_status("delivered"))


def test_load_event_returns_an_event():
    assert isinstance(load_event("message-status", samples.message_status("delivered")), Event)
