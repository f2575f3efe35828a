"""Opt-out, opt-in and HELP: what an inbound text or a status does to the suppression list.

Outside Vonage's Opt-Out Assist (US and Canada, on request) STOP is the sender's job. A text whose whole
body is one keyword counts: trimmed, NFKC-normalised (full-width and styled letters become plain ones),
case-folded, and with punctuation and symbols around it dropped, so "STOP", " stop. ", "Stop!" and "ＳＴＯＰ"
count and "please stop texting me" does not (a person writing a sentence is the handlers' to read). A status
counts when Vonage says the recipient opted out: Messages error 1240, SMS API receipt err-code 9.

Pure: no Flask, no database. The worker passes `decide` to storage, which applies it as it records the event.
"""
from __future__ import annotations

import functools
import logging
import re
import unicodedata
from dataclasses import dataclass

from receiver.sending.bodies import InvalidMessage, build_message
from schemas import Event

log = logging.getLogger("receiver.sending")

OPT_OUT_WORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
OPT_IN_WORDS = ("START", "UNSTOP", "YES")
HELP_WORDS = ("HELP", "INFO")
OPTED_OUT_CODES = {"messages": "1240", "sms-api": "9"}  # Vonage's "the recipient opted out" (spec 2.8, 5.3)
_AROUND = re.compile(r"^[\W_]+|[\W_]+$")


@dataclass(frozen=True)
class Consent:
    """What one event does: `action` opt_out, opt_in or help, for `number`; `reply` the body to queue after."""

    action: str
    number: str
    reason: str
    source: str  # keyword, rejection, receipt
    reply: dict | None = None


def keyword(text: str | None) -> str:
    """The whole body as a keyword compares: NFKC, trimmed of whitespace and punctuation, case-folded."""
    return _AROUND.sub("", unicodedata.normalize("NFKC", text or "")).casefold()


@functools.lru_cache(maxsize=32)
def words(defaults: tuple[str, ...], extra: str | None) -> frozenset[str]:
    """The keywords: Vonage's usual ones plus a setting's comma-separated extras, each as `keyword` makes it."""
    return frozenset(keyword(word) for word in (*defaults, *(extra or "").split(",")) if keyword(word))


def decide(event: Event, config) -> Consent | None:
    """What `event` does to the suppression list (and the answer it gets), by the app's settings; None: nothing."""
    if event.kind == "status":
        return _opted_out_by_status(event)
    if event.kind != "inbound" or not event.from_ or event.message_type not in ("text", "unicode"):
        return None
    word = keyword(event.text)
    if not word:
        return None
    said = f"texted {safe_word(event.text)}"
    if word in words(OPT_OUT_WORDS, config.get("OPT_OUT_KEYWORDS")):
        return Consent("opt_out", event.from_, said, "keyword", _answer(event, config.get("OPT_OUT_REPLY_TEXT")))
    if word in words(OPT_IN_WORDS, config.get("OPT_IN_KEYWORDS")):
        return Consent("opt_in", event.from_, said, "keyword")
    if word in words(HELP_WORDS, None) and config.get("HELP_TEXT"):
        return Consent("help", event.from_, said, "keyword", _answer(event, config.get("HELP_TEXT")))
    return None


def _opted_out_by_status(event: Event) -> Consent | None:
    code = str((event.error or {}).get("code") or "")
    api = "sms-api" if event.source == "sms-api" else "messages"
    if not event.to or code != OPTED_OUT_CODES[api]:
        return None
    if api == "sms-api":
        return Consent("opt_out", event.to, f"a delivery receipt said err-code {code} (opted out)", "receipt")
    return Consent("opt_out", event.to, f"Vonage rejected a message with error {code} (opted out)", "rejection")


def _answer(event: Event, text: str | None) -> dict | None:
    """The reply to a keyword, on its channel from the number it was sent to; None without text or a body."""
    if not text or not event.to:
        return None
    try:
        return build_message(event.channel, "text", to=event.from_, from_=event.to, text=text)
    except InvalidMessage as exc:
        log.warning("the answer to a keyword from %s cannot be sent on %s: %s", event.from_, event.channel, exc)
        return None


def safe_word(text: str | None) -> str:
    return repr((text or "").strip()[:40])
