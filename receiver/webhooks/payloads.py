"""Turning stored request bytes into a field dict, and a callback into its natural dedup key.

Runs on the request path, so it never rejects: a body it cannot read still gets a key (its hash).
Whatever the bytes say, what it returns can be stored: strings that are valid UTF-8 without NUL.
"""
from __future__ import annotations

import hashlib
import json
import math
from urllib.parse import parse_qsl

from receiver.platform.formats import storable
from receiver.storage.events import Callback

# Vonage's payloads nest four levels deep; anything far deeper is not one of them.
MAX_DEPTH = 32


class DuplicateParameter(ValueError):
    """An SMS API parameter appears twice: Vonage never sends that, and a signature over it is ambiguous."""


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # RFC 8259 has no NaN or Infinity; Python's json accepts them


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf, which no JSON encoder may write back
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _decode(body: bytes, *, unique_keys: bool = False):
    hook = _unique_pairs if unique_keys else None
    return json.loads(body, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=hook)


def _unique_pairs(pairs: list) -> dict:
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateParameter(key)
        found[key] = value
    return found


def json_object(body: bytes) -> dict | None:
    """The body as a strict JSON object (no NaN, no infinite numbers), or None when it is not one."""
    try:
        value = _decode(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def depth(value) -> int:
    """How deeply lists and objects nest in a decoded JSON value (0 for a scalar); no recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


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

    :raises DuplicateParameter: when a parameter appears twice, in whichever source.
    """
    if query:
        return _single_valued(parse_qsl(query, keep_blank_values=True))
    if not body:
        return {}
    if "json" in content_type or body.lstrip()[:1] == b"{":
        try:
            obj = _decode(body, unique_keys=True)
        except DuplicateParameter:
            raise
        except (ValueError, UnicodeDecodeError, RecursionError):
            return {}
        if not isinstance(obj, dict):
            return {}
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return _single_valued(parse_qsl(text, keep_blank_values=True))


def natural_key(kind, fields: dict | None, body: bytes, query: str = "") -> tuple[str, str | None, str | None]:
    """(dedup key, message id, status) of a callback of `kind` (a receiver.kinds.Kind).

    The key is Vonage's natural identity of the event (the kind's `key` fields); a payload without one
    (or whose identity is not storable text) is keyed by the hash of its bytes, so it is still stored, once.
    """
    f = fields or {}
    parts = [f.get(name) for name in kind.key]
    texts = [None if p is None else storable(p, 400) for p in parts]
    message_id = texts[0] if texts[0] is not None and len(texts[0]) <= 255 else None
    status = texts[1] if kind.event == "status" and texts[1] is not None and len(texts[1]) <= 64 else None
    missing = any(not texts[i] for i in range(kind.required))
    if missing or any(t is None and p is not None for t, p in zip(texts, parts)):
        digest = hashlib.sha256(body + b"?" + query.encode("utf-8", "surrogatepass")).hexdigest()
        return "sha256:" + digest, message_id, status
    key = "|".join(t or "" for t in texts)
    if len(key) > 400:  # absurdly long ids: keep the key within its column
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key, message_id, status


# Kept with a callback stored without a signature check (SIGNATURE_VERIFICATION=jwt-only or off).
UNVERIFIED = "unverified"


def callback(kind, fields: dict | None, *, body: bytes, query: str, content_type: str, headers: dict,
             api_key=None, application_id=None) -> Callback:
    """The Callback to store for a request of `kind` (a receiver.kinds.Kind) whose signature verified;
    `fields` is what it says (None: unreadable). Without a verified api key, the one it names (SMS API)."""
    f = fields or {}
    dedup_key, message_id, status = natural_key(kind, fields, body, query)
    channel = kind.transport.channel(f)
    if api_key is None and kind.transport.signature == "sig":
        api_key = f.get("api-key")
    return Callback(
        kind=kind.name, body=body, query=query, content_type=content_type, dedup_key=dedup_key,
        message_id=message_id, status=status, channel=None if channel is None else storable(channel, 32),
        api_key=None if api_key is None else storable(api_key, 64),
        application_id=None if application_id is None else storable(application_id, 64), headers=headers,
    )
