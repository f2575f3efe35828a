"""Check Vonage webhook signatures (Messages API JWT, SMS API `sig`) over the raw request.
Pure functions: no Flask, no I/O, and no body is parsed before the token or `sig` covering it has verified.
"""

import base64
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from receiver.webhooks.keyring import Keyring

SMS_SIGNATURE_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")

_JWT_HEADER = {"alg": "HS256", "typ": "JWT"}
# Vonage's tokens are about 500 characters; the cap bounds what we decode before the HMAC is checked.
_MAX_TOKEN_CHARS = 8192
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """A webhook failed authentication; `reason` is a short machine string for logs and metrics.

    `retryable` is true only when the request carries no token at all. Vonage warns that a callback can
    rarely leave unsigned and that answering 5xx gets it retried, signed, so the route answers 503 there
    and 401 for every other failure.
    """

    def __init__(self, reason: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


def verify_jwt(
    authorization: str | None,
    body: bytes,
    keyring: Keyring,
    *,
    iat_leeway: int = 300,
    max_age: int | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify a Messages API `Authorization: Bearer <JWT>` against the raw body; return the claims.

    `iat_leeway` tolerates clock skew for `iat` and `exp`; `max_age` (seconds, None = off) rejects old tokens.
    """
    # HS256 is checked here rather than by PyJWT, which reads its own clock and warns on
    # every secret shorter than 32 bytes, a length Vonage accepts for signature secrets.
    token = _bearer_token(authorization)
    if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
        raise SignatureError("malformed_token", "token is not three dot-separated parts of sane length")
    header_segment, claims_segment, signature_segment = token.split(".")

    # The algorithm is pinned: the token's "alg" can only be refused, it never chooses how we verify.
    alg = _decode_segment(header_segment).get("alg")
    if alg != "HS256":
        raise SignatureError("bad_algorithm", f"JWT alg {alg!r:.40} is not HS256")
    # Decoded unverified, only to read api_key; trusted once the HMAC below matches.
    claims = _decode_segment(claims_segment)
    if not _BASE64URL.fullmatch(signature_segment):
        raise SignatureError("malformed_token", "JWT signature is not base64url")

    api_key = claims.get("api_key")
    if not isinstance(api_key, str):
        raise SignatureError("missing_claim", "JWT has no api_key claim to choose a secret by")
    secrets = keyring.secrets_for(api_key)
    if not secrets:
        raise SignatureError("unknown_api_key", f"no signature secret configured for api_key {api_key!r:.40}")
    signing_input = f"{header_segment}.{claims_segment}".encode("ascii")
    signature = signature_segment.encode("ascii")
    if not any(hmac.compare_digest(_hs256(secret, signing_input), signature) for secret in secrets):
        raise SignatureError("bad_signature", f"JWT signature does not match any secret for api_key {api_key!r:.40}")

    _check_claims(claims, time.time() if now is None else now, iat_leeway, max_age)
    _check_payload_hash(claims["payload_hash"], body)
    return claims


def sign_jwt(
    body: bytes,
    secret: str,
    *,
    api_key: str,
    application_id: str | None = None,
    iat: int | None = None,
    jti: str | None = None,
) -> str:
    """Return the JWT Vonage would send with `body` (for tests and the sample sender)."""
    claims = {
        "iat": int(time.time()) if iat is None else iat,
        "jti": str(uuid.uuid4()) if jti is None else jti,
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": api_key,
    }
    if application_id is not None:
        claims["application_id"] = application_id
    signing_input = _base64url(_compact(_JWT_HEADER)) + b"." + _base64url(_compact(claims))
    return (signing_input + b"." + _hs256(secret, signing_input)).decode("ascii")


def sms_params_signature(params: Mapping[str, str], secret: str, method: str) -> str:
    """Return the lowercase hex `sig` Vonage computes over SMS API webhook parameters, `sig` excluded.

    :raises ValueError: `method` is not one of SMS_SIGNATURE_METHODS.
    """
    if method not in SMS_SIGNATURE_METHODS:
        raise ValueError(f"SMS signature method {method!r} is not one of {SMS_SIGNATURE_METHODS}")
    string_to_sign = "".join(
        f"&{key}={params[key].replace('&', '_').replace('=', '_')}" for key in sorted(params) if key != "sig"
    )
    if method == "md5hash":
        return hashlib.md5((string_to_sign + secret).encode("utf-8")).hexdigest()
    return hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), method).hexdigest()


def verify_sms(
    params: Mapping[str, str],
    keyring: Keyring,
    method: str,
    *,
    window: int = 300,
    now: float | None = None,
) -> None:
    """Check an SMS API webhook's `sig` and the freshness of its `timestamp`.

    `params` must come from exactly one source (query, form or top-level JSON members), and the caller
    must refuse a key that appears twice there (receiver.webhooks.payloads.sms_params does): we would verify one value and
    could end up reading the other.

    :raises ValueError: `method` is not one of SMS_SIGNATURE_METHODS (a configuration error).
    """
    if method not in SMS_SIGNATURE_METHODS:
        raise ValueError(f"SMS signature method {method!r} is not one of {SMS_SIGNATURE_METHODS}")
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in params.items()):
        raise SignatureError("malformed_params", "SMS webhook parameters must all be strings")
    sig = params.get("sig")
    if not sig:
        raise SignatureError("missing_sig", "SMS webhook has no sig parameter")
    api_key = params.get("api-key")
    secrets = keyring.secrets_for(api_key)
    if not secrets:
        raise SignatureError("unknown_api_key", f"no signature secret configured for api-key {api_key!r:.40}")

    sig = sig.lower()
    try:
        matched = sig.isascii() and any(
            hmac.compare_digest(sms_params_signature(params, secret, method), sig) for secret in secrets
        )
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a "\ud800" escape in a JSON body
        raise SignatureError("malformed_params", "SMS webhook parameters are not valid Unicode") from None
    if not matched:
        raise SignatureError("bad_sig", "SMS webhook sig does not match")

    timestamp = params.get("timestamp", "")
    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise SignatureError("missing_timestamp", "SMS webhook has no integer timestamp")
    if abs((time.time() if now is None else now) - int(timestamp)) > window:
        raise SignatureError("stale_timestamp", f"SMS webhook timestamp is more than {window}s from now")


def sign_sms(
    params: Mapping[str, str],
    secret: str,
    method: str,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Return a copy of `params` with `timestamp`, `nonce` and `sig` as Vonage would add them.

    A `timestamp` or `nonce` already in `params` is kept unless given here.
    """
    signed = {key: value for key, value in params.items() if key != "sig"}
    if timestamp is not None or "timestamp" not in signed:
        signed["timestamp"] = str(int(time.time()) if timestamp is None else timestamp)
    if nonce is not None or "nonce" not in signed:
        signed["nonce"] = str(uuid.uuid4()) if nonce is None else nonce
    signed["sig"] = sms_params_signature(signed, secret, method)
    return signed


def _bearer_token(authorization: str | None) -> str:
    parts = (authorization or "").split(None, 1)
    if not parts or (parts[0].lower() == "bearer" and len(parts) == 1):
        raise SignatureError("missing_token", "request has no Authorization bearer token", retryable=True)
    if parts[0].lower() != "bearer":
        raise SignatureError("malformed_token", "Authorization scheme is not Bearer")
    return parts[1].strip()


def _decode_segment(segment: str) -> dict[str, Any]:
    if not _BASE64URL.fullmatch(segment):
        raise SignatureError("malformed_token", "JWT segment is not base64url")
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):
        raise SignatureError("malformed_token", "JWT segment is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise SignatureError("malformed_token", "JWT segment is not a JSON object")
    return value


def _check_claims(claims: dict[str, Any], now: float, leeway: int, max_age: int | None) -> None:
    for name in ("iat", "iss", "payload_hash"):
        if claims.get(name) is None:
            raise SignatureError("missing_claim", f"JWT has no {name} claim")
    if claims["iss"] != "Vonage":
        raise SignatureError("bad_issuer", "JWT iss is not Vonage")
    iat = claims["iat"]
    if not _is_number(iat):
        raise SignatureError("malformed_claim", "JWT iat is not a number")
    if iat > now + leeway:
        raise SignatureError("iat_in_future", f"JWT iat is more than {leeway}s in the future")
    if max_age is not None and iat < now - max_age:
        raise SignatureError("token_too_old", f"JWT iat is more than {max_age}s old")
    if "exp" in claims:
        if not _is_number(claims["exp"]):
            raise SignatureError("malformed_claim", "JWT exp is not a number")
        if claims["exp"] <= now - leeway:
            raise SignatureError("token_expired", "JWT has expired")


def _check_payload_hash(claimed: Any, body: bytes) -> None:
    if isinstance(claimed, str) and claimed.isascii():
        claimed = claimed.lower()
        if hmac.compare_digest(claimed, hashlib.sha256(body).hexdigest()):
            return
        # Vonage's own Node sample hashes JSON.stringify(payload): the compact form in received key order.
        compact = _recompacted(body)
        if compact is not None and hmac.compare_digest(claimed, hashlib.sha256(compact).hexdigest()):
            return
    raise SignatureError("payload_hash_mismatch", "JWT payload_hash does not match the request body")


def _recompacted(body: bytes) -> bytes | None:
    try:
        return json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        return None


def _is_number(value: Any) -> bool:
    # bool is an int in Python but not a NumericDate; a huge int is fine, an infinite float is not.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _hs256(secret: str, signing_input: bytes) -> bytes:
    return _base64url(hmac.new(secret.encode("utf-8"), signing_input, hashlib.sha256).digest())


def _base64url(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _compact(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")
