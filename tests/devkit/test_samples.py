"""devkit.samples: the sample callbacks have Vonage's shapes, fresh ids and the documented overrides."""
import ast
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from devkit import samples

FAILED_DLR_STATUSES = ("expired", "failed", "rejected", "unknown")


def parse_sms_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)


def is_recent(moment: datetime) -> bool:
    return abs(datetime.now(timezone.utc) - moment) < timedelta(minutes=2)


def test_samples_is_pure_data_with_vonages_vocabulary_from_schemas():
    tree = ast.parse(Path(samples.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= sys.stdlib_module_names | {"__future__", "schemas"}


def test_every_channel_has_inbound_types():
    assert set(samples.INBOUND_TYPES) == set(samples.CHANNELS)


def test_each_call_draws_a_fresh_message_uuid():
    assert samples.inbound_message()["message_uuid"] != samples.inbound_message()["message_uuid"]


def test_each_call_draws_a_fresh_message_id():
    assert samples.delivery_receipt()["messageId"] != samples.delivery_receipt()["messageId"]


def test_messages_timestamp_is_recent_iso_utc():
    stamp = samples.message_status("delivered")["timestamp"]
    assert stamp.endswith("Z")
    assert is_recent(datetime.fromisoformat(stamp))


def test_sms_timestamp_is_recent_and_in_sms_format():
    assert is_recent(parse_sms_time(samples.inbound_sms()["message-timestamp"]))


def test_from_override_sets_from():
    assert samples.inbound_message(from_="447700900111")["from"] == "447700900111"


def test_none_override_removes_the_field():
    assert "client_ref" not in samples.message_status("delivered", client_ref=None)


def test_override_adds_a_new_field():
    assert samples.inbound_message(brand_new="x")["brand_new"] == "x"


@pytest.mark.parametrize("overrides", [{"client_ref": "abc"}, {"client-ref": "abc"}])
def test_sms_override_accepts_python_or_hyphenated_names(overrides):
    assert samples.delivery_receipt(**overrides)["client-ref"] == "abc"


def test_sms_override_values_become_strings():
    assert samples.delivery_receipt(err_code=5)["err-code"] == "5"


@pytest.mark.parametrize("payload", [
    samples.inbound_sms(),
    samples.inbound_sms("Café ☕"),
    *samples.inbound_sms_parts("A longer message in parts", 3),
    *(samples.delivery_receipt(status) for status in samples.DLR_STATUSES),
], ids=lambda p: p.get("status") or p.get("concat-part") or p["type"])
def test_sms_api_values_are_all_strings(payload):
    assert all(isinstance(value, str) for value in payload.values())


@pytest.mark.parametrize("text, sms_type", [("Running late", "text"), ("Café ☕", "unicode")])
def test_inbound_sms_type_follows_the_text(text, sms_type):
    assert samples.inbound_sms(text)["type"] == sms_type


def test_inbound_sms_keyword_is_first_word_upper_cased():
    assert samples.inbound_sms("stop promos please")["keyword"] == "STOP"


def test_binary_inbound_sms_has_no_text():
    payload = samples.inbound_sms(None, type="binary", data="48656c6c6f", udh="050003cc0201")
    assert "text" not in payload and "keyword" not in payload
    assert (payload["type"], payload["data"], payload["udh"]) == ("binary", "48656c6c6f", "050003cc0201")


# --- multipart -------------------------------------------------------------

def test_parts_join_back_into_the_text_in_order():
    parts = samples.inbound_sms_parts("Hello from a long message", 4)
    assert "".join(p["text"] for p in parts) == "Hello from a long message"


def test_parts_share_concat_ref_sender_and_recipient():
    parts = samples.inbound_sms_parts("Hello from a long message", 3)
    assert len({(p["concat-ref"], p["msisdn"], p["to"], p["concat-total"]) for p in parts}) == 1
    assert parts[0]["concat-total"] == "3"


def test_parts_are_numbered_from_one():
    parts = samples.inbound_sms_parts("Hello from a long message", 3)
    assert [p["concat-part"] for p in parts] == ["1", "2", "3"]


def test_parts_have_distinct_message_ids():
    parts = samples.inbound_sms_parts("Hello from a long message", 3)
    assert len({p["messageId"] for p in parts}) == 3


def test_parts_of_a_unicode_message_are_all_unicode():
    parts = samples.inbound_sms_parts("Café, then plain ascii", 2)
    assert [p["type"] for p in parts] == ["unicode", "unicode"]


def test_parts_apply_overrides_to_every_part():
    parts = samples.inbound_sms_parts("Hello there", 2, to="447700900999")
    assert [p["to"] for p in parts] == ["447700900999", "447700900999"]


@pytest.mark.parametrize("parts", [0, 6])
def test_parts_out_of_range_raise(parts):
    with pytest.raises(ValueError):
        samples.inbound_sms_parts("Hello", parts)


# --- delivery receipts -----------------------------------------------------

@pytest.mark.parametrize("status", FAILED_DLR_STATUSES)
def test_failed_dlr_has_non_zero_err_code(status):
    assert samples.delivery_receipt(status)["err-code"] != "0"


@pytest.mark.parametrize("status", sorted(set(samples.DLR_STATUSES) - set(FAILED_DLR_STATUSES)))
def test_successful_dlr_has_zero_err_code(status):
    assert samples.delivery_receipt(status)["err-code"] == "0"


def test_dlr_scts_is_carrier_time():
    assert len(samples.delivery_receipt()["scts"]) == 10


# --- Messages statuses -----------------------------------------------------

@pytest.mark.parametrize("status", ["rejected", "undeliverable"])
@pytest.mark.parametrize("channel", samples.CHANNELS)
def test_failed_status_carries_v1_error(status, channel):
    error = samples.message_status(status, channel)["error"]
    assert set(error) == {"type", "title", "detail", "instance"}
    assert error["type"].endswith("#" + error["title"])


def test_whatsapp_rejected_is_outside_the_window():
    assert samples.message_status("rejected", "whatsapp")["error"]["title"] == "1340"


def test_whatsapp_delivered_carries_conversation_and_pricing():
    payload = samples.message_status("delivered", "whatsapp")
    assert set(payload["whatsapp"]) == {"conversation", "pricing"}
    assert "usage" in payload


def test_sms_submitted_carries_usage_and_segments():
    payload = samples.message_status("submitted", "sms")
    assert payload["usage"]["currency"] == "EUR"
    assert payload["sms"] == {"count_total": "2"}


@pytest.mark.parametrize("status", ["submitted", "delivered", "read"])
def test_successful_status_has_no_error(status):
    assert "error" not in samples.message_status(status, "whatsapp")


# --- v0.1 shapes -----------------------------------------------------------

def test_v01_status_has_address_objects_and_no_channel():
    payload = samples.message_status("delivered", "whatsapp", version="v0.1")
    assert "channel" not in payload
    assert payload["to"]["type"] == payload["from"]["type"] == "whatsapp"


def test_v01_error_has_integer_code_and_reason():
    error = samples.message_status("rejected", "messenger", version="v0.1")["error"]
    assert error == {"code": 1340, "reason": samples.WINDOW_ERROR[1]}


def test_v01_messenger_uses_ids_on_both_sides():
    payload = samples.message_status("read", "messenger", version="v0.1")
    assert "id" in payload["to"] and "id" in payload["from"]


def test_v01_viber_is_viber_service_msg_with_service_id():
    payload = samples.inbound_message("viber_service", version="v0.1")
    assert payload["to"] == {"type": "viber_service_msg", "id": samples.OUR_IDS["viber_service"]}
    assert "number" in payload["from"]


def test_v01_inbound_content_lives_in_message():
    payload = samples.inbound_message("whatsapp", "image", version="v0.1")
    assert payload["message"]["content"]["type"] == "image"
    assert "url" in payload["message"]["content"]["image"]


def test_v01_location_uses_string_latitude_longitude():
    location = samples.inbound_message("whatsapp", "location", version="v0.1")["message"]["content"]["location"]
    assert isinstance(location["latitude"], str) and isinstance(location["longitude"], str)


def test_v01_sms_keeps_num_messages_and_usage():
    payload = samples.inbound_message("sms", version="v0.1")
    assert payload["message"]["sms"] == {"num_messages": "1"}
    assert "usage" in payload


# --- v1 inbound content ----------------------------------------------------

@pytest.mark.parametrize("channel, message_type", [
    (c, t) for c, types in samples.INBOUND_TYPES.items() for t in types if t not in ("text", "unsupported")
])
def test_inbound_sample_carries_its_type_object(channel, message_type):
    assert isinstance(samples.inbound_message(channel, message_type)[message_type], dict)


def test_whatsapp_button_payload_is_an_object_rcs_a_string():
    assert isinstance(samples.inbound_message("whatsapp", "button")["button"]["payload"], dict)
    assert isinstance(samples.inbound_message("rcs", "button")["button"]["payload"], str)


def test_unsupported_has_no_object():
    payload = samples.inbound_message("whatsapp", "unsupported")
    assert "unsupported" not in payload and "text" not in payload


def test_traffic_mix_is_distinct_and_loads():
    import random as _random

    from schemas import load_event

    traffic = samples.traffic(300, _random.Random(7))
    kinds = {kind for kind, _, _ in traffic}
    assert kinds == {kind for _, kind, _ in samples.TRAFFIC_MIX}
    ids = [p.get("message_uuid") or p.get("messageId") for _, _, p in traffic]
    assert len(set(ids)) == len(ids)
    for kind, _, payload in traffic:
        load_event(kind, payload)
