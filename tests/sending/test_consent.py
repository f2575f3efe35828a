"""Opt-out, opt-in and HELP end to end (the simulator's inbound texts and rejections, the app on loopback), and
receiver.sending.consent's keyword matching over generated text."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

import handlers
from receiver import sending
from receiver.storage.suppressions import recipient_key
from receiver.sending.consent import OPT_IN_WORDS, OPT_OUT_WORDS, keyword, words
from tests.sending.test_delivery import AUTH, CUSTOMER, OURS, _live, private_pem  # noqa: F401 (a fixture)

CONFIRMATION = "You will get no more messages from us. Text START to opt back in."
HELP = "Acme Shop order updates. Text STOP to opt out."


@pytest.fixture
def live(make_app, database_url, private_pem):  # noqa: F811
    yield from _live(make_app, database_url, {"VONAGE_PRIVATE_KEY": private_pem, "OPT_OUT_REPLY_TEXT": CONFIRMATION,
                                              "HELP_TEXT": HELP, "OPT_OUT_KEYWORDS": "ARRET, stopp"})


def texts(live, text: str, channel: str = "sms") -> None:
    """The customer texts us, and the worker and the sender do what follows."""
    live.vonage.reply(text=text, from_=CUSTOMER, to=OURS, channel=channel)
    live.process()
    live.send()


def body(**fields):
    return {"to": CUSTOMER, "from": OURS, "channel": "sms", "message_type": "text", "text": "Your order is ready",
            **fields}


def test_stop_then_a_send_is_409_with_no_api_call_and_start_lifts_it(live):
    texts(live, "STOP")
    calls = len(live.vonage.requests_to("POST", "/v1/messages"))

    refused = live.client.post("/api/outbox", json=body(), headers=AUTH)
    assert refused.status_code == 409 and refused.get_json()["error"] == "opted_out"
    assert CUSTOMER in refused.get_json()["message"] and "START" in refused.get_json()["message"]
    live.send()
    assert len(live.vonage.requests_to("POST", "/v1/messages")) == calls  # no API call for it

    texts(live, "start")
    assert live.client.post("/api/outbox", json=body(), headers=AUTH).status_code == 202
    live.send()
    assert [m.body["text"] for m in live.vonage.sent][-1] == "Your order is ready"


def test_the_confirmation_goes_out_once_after_the_number_is_suppressed(live):
    texts(live, "Stop.")
    texts(live, "STOP")  # already suppressed: no second confirmation
    texts(live, "arret")  # an extra keyword from OPT_OUT_KEYWORDS

    assert [m.body["text"] for m in live.vonage.sent] == [CONFIRMATION]
    assert live.vonage.sent[0].body["to"] == CUSTOMER and live.vonage.sent[0].body["from"] == OURS
    [entry] = live.storage.outbox.suppressed()
    assert entry["number"] == CUSTOMER and entry["source"] == "keyword"


def test_the_handlers_still_receive_stop_and_what_they_send_to_it_is_suppressed(live, monkeypatch):
    seen = []

    def answers_everything(event):
        seen.append(event.text)
        sending.reply(event, text="Thanks for your message!")

    monkeypatch.setitem(handlers.INBOUND_HANDLERS, "text", answers_everything)
    texts(live, "STOP", channel="whatsapp")

    assert seen == ["STOP"]
    assert [m.body["text"] for m in live.vonage.sent] == [CONFIRMATION]
    states = {m["request"]["text"]: (m["state"], m["last_error"]) for m in live.storage.outbox.listed()}
    state, why = states["Thanks for your message!"]
    assert state == "suppressed" and "opted out" in why


def test_one_stop_covers_every_channel_and_way_of_writing_the_number(live):
    texts(live, "STOP", channel="whatsapp")
    assert live.client.post("/api/outbox", json=body(channel="sms"), headers=AUTH).status_code == 409
    assert live.client.post("/api/outbox", json=body(channel="viber_service"), headers=AUTH).status_code == 409
    assert recipient_key("+44 7700 900123") == recipient_key(CUSTOMER)


def test_help_is_answered_with_help_text(live):
    texts(live, "help")
    assert [m.body["text"] for m in live.vonage.sent] == [HELP]


def test_a_rejection_saying_the_recipient_opted_out_suppresses_them(live):
    live.vonage.opted_out.add(CUSTOMER)
    message_id = live.queue(**body())
    live.send()
    live.process()  # the status: rejected, error 1240

    assert live.outbox(message_id)["status"] == "rejected"
    [entry] = live.storage.outbox.suppressed()
    assert entry["source"] == "rejection" and "1240" in entry["reason"]
    assert live.client.post("/api/outbox", json=body(), headers=AUTH).status_code == 409


def test_a_message_queued_before_stop_is_not_sent_after_it(live):
    message_id = live.queue(**body())  # queued, not sent yet
    live.vonage.reply(text="STOP", from_=CUSTOMER, to=OURS, channel="sms")
    live.process()
    live.send()
    assert live.outbox(message_id)["state"] == "suppressed"
    assert [m.body["text"] for m in live.vonage.sent] == [CONFIRMATION]


def test_the_cli_lists_adds_and_removes_suppressed_numbers(live):
    runner = live.app.test_cli_runner()
    assert "no number has opted out" in runner.invoke(args=["vonage", "optout", "list"]).output
    assert runner.invoke(args=["vonage", "optout", "add", CUSTOMER]).exit_code == 0
    assert CUSTOMER in runner.invoke(args=["vonage", "optout", "list"]).output
    assert live.client.post("/api/outbox", json=body(), headers=AUTH).status_code == 409
    assert runner.invoke(args=["vonage", "optout", "remove", CUSTOMER]).exit_code == 0
    assert runner.invoke(args=["vonage", "optout", "remove", CUSTOMER]).exit_code == 1
    assert live.client.post("/api/outbox", json=body(), headers=AUTH).status_code == 202


# -- the keywords ----------------------------------------------------------------------------------------------
AROUND = st.text(alphabet=" \t\n.!?,;:¡¿\"'()*-…🛑", max_size=4)


@given(word=st.sampled_from(OPT_OUT_WORDS), before=AROUND, after=AROUND,
       case=st.sampled_from([str.upper, str.lower, str.title]), wide=st.booleans())
def test_an_opt_out_word_counts_however_it_is_cased_spaced_punctuated_or_styled(word, before, after, case, wide):
    written = case(word)
    if wide:  # full-width letters, as some phone keyboards write them
        written = "".join(chr(ord(c) + 0xFEE0) for c in written)
    assert keyword(before + written + after) in words(OPT_OUT_WORDS, None)


@given(text=st.text(max_size=30))
def test_only_a_whole_body_that_is_a_keyword_counts(text):
    word = keyword(text)
    if word in words(OPT_OUT_WORDS, None) | words(OPT_IN_WORDS, None):
        # What is left after trimming is exactly a keyword: nothing else was written.
        core = unicodedata.normalize("NFKC", text).casefold()
        assert word in core and all(not c.isalnum() for c in core.replace(word, "", 1))


@pytest.mark.parametrize("text", ["please stop texting me", "STOP IT", "stopping", "don't stop", "S T O P", ""])
def test_a_sentence_is_not_a_keyword(text):
    assert keyword(text) not in words(OPT_OUT_WORDS, None)


def test_flask_vonage_send_to_a_suppressed_number_exits_1_saying_why(live):
    live.storage.outbox.suppress(CUSTOMER)
    result = live.app.test_cli_runner().invoke(args=["vonage", "send", "--to", CUSTOMER, "--from", OURS,
                                                     "--channel", "sms", "--text", "hi"])
    assert result.exit_code == 1 and "opted out" in result.output
    assert live.storage.outbox.listed() == []
