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
from collections.abc import Mapping, Sequence
from typing import Any

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


class Keyring:
    """Signature secrets per Vonage API key, current first, then the previous one during a rotation."""

    def __init__(self, default: Sequence[str] = (), by_key: Mapping[str, Sequence[str]] | None = None) -> None:
        self._default = _checked_secrets(default, "VONAGE_SIGNATURE_SECRET", allow_none=True)
        self._by_key = {}
        for api_key, secrets in (by_key or {}).items():
            if not api_key:
                raise ValueError("VONAGE_SIGNATURE_SECRETS names an empty api key")
            self._by_key[api_key] = _checked_secrets(secrets, f"api key {api_key!r}", allow_none=False)

    @classmethod
    def from_config(cls, secret: str | None, secrets_by_key: str | None, api_key: str | None = None) -> "Keyring":
        """Build from VONAGE_SIGNATURE_SECRET, VONAGE_SIGNATURE_SECRETS and optionally VONAGE_API_KEY.

        `secret` is "current[,previous]". `secrets_by_key` is "apikey1=current[,previous];apikey2=current".
        With `api_key`, the single secret belongs to that key alone; without it, it serves every api key
        that `secrets_by_key` does not name. None or a blank value means "not configured".
        Secrets are stripped of surrounding whitespace and cannot contain "," or ";".

        :raises ValueError: an empty secret, more than two secrets for a key, a malformed entry, or an
            api key configured twice. Messages never include a secret.
        """
        by_key = _parse_secrets_by_key(secrets_by_key) if _is_set(secrets_by_key) else {}
        default = _split_secrets(secret) if _is_set(secret) else []
        if default and _is_set(api_key):
            api_key = api_key.strip()
            if api_key in by_key:
                raise ValueError(f"api key {api_key!r} is in both VONAGE_SIGNATURE_SECRET and VONAGE_SIGNATURE_SECRETS")
            by_key[api_key] = default
            default = []
        return cls(default, by_key)

    def secrets_for(self, api_key: str | None) -> list[str]:
        """Secrets to try for a webhook from `api_key`, current first; empty when the key is unknown."""
        if api_key is not None and api_key in self._by_key:
            return list(self._by_key[api_key])
        return list(self._default)

    def __bool__(self) -> bool:
        return bool(self._default or self._by_key)

    def __repr__(self) -> str:
        # Never show the secrets themselves: this object ends up in tracebacks and debug logs.
        return f"Keyring(default={len(self._default)} secret(s), api_keys={sorted(self._by_key)})"


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
    # HS256 is checked here (spec 4.2 step 5) rather than by PyJWT, which reads its own clock and warns on
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
    """Return the lowercase hex `sig` Vonage computes over SMS API webhook parameters, `sig` excluded (spec 5.5).

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


def secrets_by_setting(secret: str | None, secrets_by_key: str | None) -> dict[str, list[str]]:
    """Each configured list of secrets (current first) under the name of the setting that holds it:
    "VONAGE_SIGNATURE_SECRET", "VONAGE_SIGNATURE_SECRETS (api key k1)", for messages that say where
    a secret is without showing it. Takes what Keyring.from_config has already accepted."""
    found = {}
    if _is_set(secret):
        found["VONAGE_SIGNATURE_SECRET"] = _split_secrets(secret)
    if _is_set(secrets_by_key):
        for api_key, secrets in _parse_secrets_by_key(secrets_by_key).items():
            found[f"VONAGE_SIGNATURE_SECRETS (api key {api_key})"] = secrets
    return found


def _is_set(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def _split_secrets(value: str) -> list[str]:
    return [secret.strip() for secret in value.split(",")]


def _parse_secrets_by_key(value: str) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {}
    for position, entry in enumerate(value.split(";"), start=1):
        if not entry.strip():
            continue  # tolerate a trailing or doubled ";"
        api_key, equals, secrets = entry.partition("=")
        api_key = api_key.strip()
        if not equals or not api_key:
            # Name the position, not the entry: the entry may be a secret.
            raise ValueError(f"VONAGE_SIGNATURE_SECRETS entry {position} is not 'apikey=current[,previous]'")
        if api_key in by_key:
            raise ValueError(f"VONAGE_SIGNATURE_SECRETS names api key {api_key!r} twice")
        by_key[api_key] = _split_secrets(secrets)
    return by_key


def _checked_secrets(secrets: Sequence[str], where: str, *, allow_none: bool) -> tuple[str, ...]:
    if isinstance(secrets, str):
        raise ValueError(f"secrets for {where} must be a sequence of strings, not one string")
    if not secrets and allow_none:
        return ()
    if not 1 <= len(secrets) <= 2:
        raise ValueError(f"{where} needs one or two secrets (current[,previous]), got {len(secrets)}")
    if any(not secret for secret in secrets):
        raise ValueError(f"{where} has an empty secret")
    return tuple(secrets)
