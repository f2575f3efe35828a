"""Reading Vonage's answers to a send: its problem details, what to do about an error code, Retry-After.

Pure functions over a response already read (receiver.sending.client reads it, within its deadline).
"""
from __future__ import annotations

import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import requests

RETRY_AFTER_CEILING = 86400.0  # a Retry-After past a day is a day (the outbox caps it lower)
_DIGITS = re.compile(r"[0-9]+")

# What to do about the error codes Vonage puts at the end of a problem's `type` (its error code reference).
ERROR_HINTS = {
    "1000": "Vonage is throttling this account: send more slowly.",
    "1010": "Fix the parameters listed.",
    "1020": "Fix the parameters listed.",
    "1022": "Check the template's name, locale and parameters match a template approved for this WhatsApp number.",
    "1030": "Vonage had an internal error: retry later.",
    "1050": "The recipient is barred from receiving messages from this sender: do not retry.",
    "1070": "The account's credit or quota is used up: top up the account, then send again.",
    "1120": "`from` must be a number or ID this account owns on this channel, linked to the application.",
    "1340": "The recipient has not written in the last 24 hours: send an approved template "
            "(message_type \"template\") instead.",
}



def refusal(status: int, problem: dict | None, summary: str, credentials_hint: str,
             response: requests.Response) -> str:
    if status == 401:
        return f"Vonage refused the credentials (401): {credentials_hint}. {summary}"
    code = error_code(problem)
    if code in ERROR_HINTS:
        return f"Vonage refused the message ({status}, error {code}): {summary}. {ERROR_HINTS[code]}"
    if status in (400, 422):
        return f"Vonage refused the message body ({status}): {summary}"
    if status == 403:
        return (f"Vonage refused to send ({status}): {summary}. Check the sender is linked to this application "
                "and the channel is enabled for the account.")
    if 300 <= status < 400:
        return f"Vonage answered a redirect ({status} to {response.headers.get('Location')}): check the API base URL"
    return f"Vonage answered {status}: {summary}"


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds (ASCII digits) or an HTTP-date, at most
    RETRY_AFTER_CEILING and never negative; None when absent or unreadable (the caller's own backoff then)."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        # Length first: int() of 400 digits is fine, but float() of it is inf, and more digits cost time.
        return RETRY_AFTER_CEILING if len(value) > 6 else min(float(int(value)), RETRY_AFTER_CEILING)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CEILING)


def error_code(problem: dict | None) -> str | None:
    if not problem:
        return None
    code = str(problem.get("type", "")).rpartition("#")[2]
    if code.isdigit():
        return code
    title = str(problem.get("title", ""))
    return title if title.isdigit() else None


def describe(problem: dict | None, response: requests.Response) -> str:
    """One line from a problem body: title, detail and the invalid parameters; else the start of the body."""
    if problem is None:
        text = response.text.strip()
        return text[:200] if text else "no details in the response"
    parts = [str(problem[key]) for key in ("title", "detail") if problem.get(key)]
    invalid = [item for item in problem.get("invalid_parameters") or [] if isinstance(item, dict)]
    if invalid:
        fields = ", ".join(f"{item.get('name', '?')} ({item.get('reason', 'invalid')})" for item in invalid)
        parts.append(f"invalid parameters: {fields}")
    return ": ".join(part.rstrip(". ") for part in parts) or "no details in the response"


def read_json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
