"""Turning stored request bytes into a field dict, and a callback into its natural dedup key.

Runs on the request path, so it never rejects: a body it cannot read still gets a key (its hash).
"""
from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qsl

MESSAGES_KINDS = ("message-status", "inbound-message")
SMS_KINDS = ("inbound-sms", "delivery-receipt")
KINDS = MESSAGES_KINDS + SMS_KINDS


class DuplicateParameter(ValueError):
    """An SMS API parameter appears twice: Vonage never sends that, and a signature over it is ambiguous."""


def json_object(body: bytes) -> dict | None:
    """The body as a JSON object, or None when it is not one."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _single_valued(pairs) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise DuplicateParameter(key)
        params[key] = value
    return params


def sms_params(query: str, body: bytes, content_type: str) -> dict[str, str]:
    """The SMS API parameters from exactly one source: query string, form body or JSON body.

    Vonage sends one of the three; the query string wins when present (GET), then a JSON body,
    then a form body. JSON values that are not strings are turned into strings, as Vonage sends them.

    :raises DuplicateParameter: when a parameter appears twice.
    """
    if query:
        return _single_valued(parse_qsl(query, keep_blank_values=True))
    if not body:
        return {}
    if "json" in content_type or body.lstrip()[:1] == b"{":
        obj = json_object(body)
        if obj is None:
            return {}
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return _single_valued(parse_qsl(text, keep_blank_values=True))


def _s(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def natural_key(kind: str, fields: dict | None, body: bytes, query: str = "") -> tuple[str, str | None, str | None]:
    """(dedup key, message id, status) of a callback.

    The key is Vonage's natural identity of the event; a payload without one is keyed by the
    hash of its bytes, so it is still stored, once.
    """
    f = fields or {}
    message_id = status = None
    parts: list = [None]
    if kind == "message-status":
        message_id, status = f.get("message_uuid"), f.get("status")
        parts = [message_id, status, f.get("timestamp")]
    elif kind == "inbound-message":
        message_id = f.get("message_uuid")
        parts = [message_id]
    elif kind == "inbound-sms":
        message_id = f.get("messageId")
        parts = [message_id, f.get("concat-part", "")]
    elif kind == "delivery-receipt":
        message_id, status = f.get("messageId"), f.get("status")
        parts = [message_id, status, f.get("err-code"), f.get("message-timestamp")]
    required = parts[:2] if kind in ("message-status", "delivery-receipt") else parts[:1]
    if any(p is None or p == "" for p in required):
        digest = hashlib.sha256(body + b"?" + query.encode()).hexdigest()
        return "sha256:" + digest, _short(message_id), _short(status)
    key = "|".join("" if p is None else _s(p) for p in parts)
    if len(key) > 400:  # absurdly long ids: keep the key within the column
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key, _short(message_id), _short(status)


def _short(value, limit: int = 200) -> str | None:
    if value is None:
        return None
    text = _s(value)
    return text[:limit]
