"""receiver.sending.bodies: a Messages API body is checked before it is queued, and refused with one clear
reason naming the field; numbers are normalised and unknown fields kept."""
import pytest

from receiver.sending.bodies import InvalidMessage, build_message, validate_message

CUSTOMER = "447700900123"
OUR_NUMBER = "447700900456"
MEDIA = "https://cdn.acme.example/media/receipt-48213.png"


GOOD = {"channel": "sms", "message_type": "text", "to": CUSTOMER, "from": "AcmeShop", "text": "Ready"}


@pytest.mark.parametrize("change, name, reason", [
    ({"channel": "telegram"}, "channel", "must be one of sms, mms, whatsapp, messenger, viber_service, rcs"),
    ({"channel": None}, "channel", "is required"),
    ({"message_type": "image"}, "message_type", "sms sends text, not 'image'"),
    ({"channel": "mms", "message_type": "text"}, "message_type", "mms sends image, vcard, audio, video"),
    ({"to": None}, "to", "is required"),
    ({"to": "07700 900123"}, "to", "must be a phone number in E.164 format: 7 to 15 digits"),
    ({"from": ""}, "from", "must be a non-empty string"),
    ({"from": "x" * 51}, "from", "must be at most 50 characters"),
    ({"channel": "rcs", "from": "acme agent"}, "from", "must be an RCS agent ID"),
    ({"text": ""}, "text", "must be a non-empty string"),
    ({"text": "x" * 1001}, "text", "must be at most 1000 characters on sms, got 1001"),
    ({"channel": "messenger", "to": "5671924083648192", "text": "x" * 641}, "text", "at most 640 characters"),
    ({"channel": "whatsapp", "text": "x" * 4097}, "text", "at most 4096 characters"),
    ({"channel": "rcs", "from": "acme", "text": "x" * 3073}, "text", "at most 3072 characters"),
    ({"channel": "viber_service", "text": "x" * 1001}, "text", "at most 1000 characters"),
    ({"client_ref": "r" * 101}, "client_ref", "must be at most 100 characters, got 101"),
    ({"client_ref": 48213}, "client_ref", "must be a string"),
    ({"webhook_version": "v2"}, "webhook_version", "must be one of v1, v0.1"),
    ({"webhook_url": "ftp://hooks.acme.example/status"}, "webhook_url", "must be an http(s) URL"),
    ({"webhook_url": "/webhooks/message-status"}, "webhook_url", "must be an http(s) URL"),
    ({"ttl": 0}, "ttl", "must be a positive whole number of seconds"),
    ({"ttl": True}, "ttl", "must be a positive whole number of seconds"),
    ({"channel": "mms", "message_type": "image", "image": {"url": MEDIA}, "ttl": 60}, "ttl",
     "must be between 300 and 259200 seconds"),
    ({"channel": "whatsapp", "message_type": "image", "image": {"url": "javascript:alert(1)"}}, "image.url",
     "must be an http(s) URL"),
    ({"channel": "whatsapp", "message_type": "image"}, "image", "is required"),
    ({"channel": "whatsapp", "message_type": "file", "file": {"url": MEDIA, "caption": 3}}, "file.caption",
     "must be a string"),
    ({"channel": "whatsapp", "message_type": "template", "template": {"parameters": []}}, "template.name",
     "is required"),
    ({"channel": "whatsapp", "message_type": "template", "template": {"name": "t", "parameters": "48213"}},
     "template.parameters", "must be a list"),
    ({"channel": "whatsapp", "message_type": "custom", "custom": {}}, "custom", "must be a non-empty object"),
    ({"channel": "whatsapp", "context": {"message_uuid": ""}}, "context.message_uuid", "must be a non-empty string"),
    ({"sms": {"encoding_type": "binary"}}, "sms.encoding_type", "must be one of text, unicode, auto"),
    ({"channel": "viber_service", "viber_service": {"category": "news"}}, "viber_service.category",
     "must be one of transaction, promotion"),
    ({"channel": "messenger", "to": "5671924083648192", "messenger": {"category": "message_tag"}}, "messenger.tag",
     "is required"),
    ({"failover": []}, "failover", "must be a non-empty list of messages"),
    ({"failover": [{**GOOD, "to": "123"}]}, "failover[0].to", "must be a phone number"),
    ({"failover": [{**GOOD, "failover": [GOOD]}]}, "failover[0].failover", "cannot have its own failover"),
])
def test_validate_message_refuses_with_one_clear_reason(change, name, reason):
    body = {key: value for key, value in {**GOOD, **change}.items() if value is not None}

    with pytest.raises(InvalidMessage) as caught:
        validate_message(body)

    assert caught.value.name == name and reason in caught.value.reason
    assert isinstance(caught.value, ValueError) and str(caught.value).startswith(f"{name}: ")


@pytest.mark.parametrize("body", [None, [], "text"])
def test_validate_message_wants_an_object(body):
    with pytest.raises(ValueError, match="must be a JSON object"):
        validate_message(body)


def test_validate_message_normalizes_numbers_and_keeps_unknown_fields():
    body = {**GOOD, "to": " +447700900123", "channel": "whatsapp", "from": "+447700900456",
            "whatsapp": {"new_option": 1}, "future_field": {"a": 1}}

    normalized = validate_message(body)

    assert (normalized["to"], normalized["from"]) == (CUSTOMER, OUR_NUMBER)
    assert normalized["future_field"] == {"a": 1} and normalized["whatsapp"] == {"new_option": 1}
    assert body["to"] == " +447700900123"  # the input is left alone


def test_build_message_refuses_options_for_a_channel_without_them():
    with pytest.raises(InvalidMessage, match="mms has no options object"):
        build_message("mms", "image", to=CUSTOMER, from_=OUR_NUMBER, url=MEDIA, options={"x": 1})
