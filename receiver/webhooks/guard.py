"""Request authentication: decides, before anything is stored, whether a request comes from Vonage.

Fails closed: without a secret the app does not start (development generates one, visibly).
Keeps the bounded log of rejected requests. Never stores or processes a rejected callback.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets

from flask import Flask

from receiver.platform.config import ConfigError
from receiver.platform.devfiles import made_once
from receiver.platform.logs import Tally
from receiver.storage import get_storage
from receiver.webhooks.keyring import Keyring, secrets_by_setting
from receiver.webhooks.signatures import SMS_SIGNATURE_METHODS, SignatureError, verify_jwt, verify_sms

log = logging.getLogger("receiver.webhooks")

MODES = ("on", "jwt-only", "off")
DEV_SECRET_FILE = "dev-signature-secret"

# The floor for a signature secret outside development, used by the start check and by doctor.
# Vonage documents no format for signature secrets: the Messages API's "Signed webhooks" page only
# recommends they be "no less than 32 bits" (developer.nexmo.com/messages/concepts/signed-webhooks),
# and neither it nor the dashboard's API settings page says what the dashboard generates. The secret
# is an HS256 key, for which RFC 7518 section 3.2 asks for 256 bits (32 bytes; PyJWT warns below
# that), and Vonage's own SDK tests use a 32-character one (vonage-python-sdk,
# jwt/tests/test_verify_jwt.py). The floor is 16 characters rather than 32: it refuses the typed
# placeholders ("x", "changeme") without the risk of refusing a secret Vonage really signs with.
MIN_SECRET_LENGTH = 16
# Values from docs, SDK tests, samples and .env templates: a secret that is one of these is not a secret.
EXAMPLE_SECRETS = {"yq9vd3ke7pl2sx8wr4tn6bm1cz5hj0af", "qwertyuiopasdfghjklzxcvbnm123456", "signature_secret",
                   "signature-secret", "secret", "changeme", "change-me", "your-signature-secret",
                   "your_signature_secret", "replace-me", "replace_me"}


def weakness(secret: str) -> str | None:
    """Why `secret` cannot be a real signature secret (blank, one character repeated, too short, an
    example value), or None."""
    if not secret.strip():
        return "is blank"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    if len(set(secret)) == 1:
        return "is one character repeated"
    if secret.lower() in EXAMPLE_SECRETS:
        return "is an example value"
    return None


class Guard:
    """Checks one request's signature with the app's keyring and settings."""

    def __init__(self, keyring: Keyring, config: dict):
        self.keyring = keyring
        self.mode = config["SIGNATURE_VERIFICATION"]
        self.sms_method = config["VONAGE_SIGNATURE_METHOD"]
        self.iat_leeway = config["JWT_IAT_LEEWAY_SECONDS"]
        self.max_age = config["JWT_MAX_AGE_SECONDS"] or None
        self.sms_window = config["SMS_TIMESTAMP_WINDOW_SECONDS"]

    def check_messages(self, authorization: str | None, body: bytes) -> dict:
        """The verified JWT claims of a Messages API callback ({} when verification is off).

        :raises SignatureError: `retryable` when the token is missing (answer 503, Vonage retries).
        """
        if self.mode == "off":
            return {}
        return verify_jwt(authorization, body, self.keyring, iat_leeway=self.iat_leeway, max_age=self.max_age)

    def check_sms(self, params: dict[str, str]) -> bool:
        """Verify an SMS API callback's `sig`; False when verification is weakened and nothing was checked.

        :raises SignatureError: when the signature is missing, wrong or stale.
        """
        if self.mode != "on":
            return False
        verify_sms(params, self.keyring, self.sms_method, window=self.sms_window)
        return True


def _secret_or_dev_secret(app: Flask) -> tuple[str | None, str | None]:
    secret = app.config.get("VONAGE_SIGNATURE_SECRET")
    by_key = app.config.get("VONAGE_SIGNATURE_SECRETS")
    for name, value in (("VONAGE_SIGNATURE_SECRET", secret), ("VONAGE_SIGNATURE_SECRETS", by_key)):
        if value and not value.strip():
            # Whitespace is no secret: the app would start with none, and answer every callback 401,
            # which Vonage does not retry.
            raise ConfigError(f"{name} is blank: set it to the signature secret in the Vonage dashboard (API settings)")
    if secret or by_key or app.config["SIGNATURE_VERIFICATION"] == "off":
        return secret, by_key
    if app.config["APP_ENV"] != "development":
        # Without it every callback would be forgeable, so the app refuses to start.
        raise ConfigError(
            "VONAGE_SIGNATURE_SECRET is not set: set it to your Vonage account's signature secret "
            "(dashboard -> API settings), VONAGE_SIGNATURE_SECRETS for several accounts, or APP_ENV=development"
        )
    return development_secret(app.instance_path), None


def _refuse_weak_secrets(secret: str | None, by_key: str | None) -> None:
    """Outside development, a configured secret that is too short or an example value stops the start.
    The message names the setting (and api key), never the secret."""
    for where, values in secrets_by_setting(secret, by_key).items():
        for position, value in enumerate(values):
            problem = weakness(value)
            if problem:
                which = f"the previous secret in {where}" if position else where
                raise ConfigError(f"{which} {problem}: copy the signature secret from the Vonage dashboard "
                                  "(API settings)")


def development_secret(instance_path: str) -> str:
    """The local development secret under instance/, generated (and printed) on first use."""
    secret, made = made_once(instance_path, DEV_SECRET_FILE, lambda: secrets.token_urlsafe(32))
    if made:
        path = os.path.join(instance_path, DEV_SECRET_FILE)
        print(
            f" * Development signature secret generated and stored in {path}\n"
            f" * Sample callbacks sent with `flask vonage trigger` are signed with it.\n"
            f" * In production set VONAGE_SIGNATURE_SECRET to your Vonage signature secret.",
            flush=True,
        )
    return secret


def token_matches(given: str | None, expected: str | None) -> bool:
    """The one comparison for the operator's tokens (ADMIN_TOKEN, METRICS_TOKEN, the console's CSRF
    token): both set, and equal, in constant time (hashed first, so not even the length shows)."""
    if not (given and expected):
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest())


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """True when an `Authorization: Bearer <token>` header (scheme in any case) carries `expected`."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and token_matches(given.strip(), expected)


def init_app(app: Flask) -> None:
    """Build the app's Guard from config; refuse to start without a secret outside development."""
    mode = app.config["SIGNATURE_VERIFICATION"]
    if mode not in MODES:
        raise ConfigError(f"SIGNATURE_VERIFICATION={mode!r}: use one of {', '.join(MODES)}")
    method = app.config["VONAGE_SIGNATURE_METHOD"]
    if method not in SMS_SIGNATURE_METHODS:
        raise ConfigError(f"VONAGE_SIGNATURE_METHOD={method!r}: use one of {', '.join(SMS_SIGNATURE_METHODS)} "
                          "(the signature method set in the Vonage dashboard)")
    secret, by_key = _secret_or_dev_secret(app)
    try:
        keyring = Keyring.from_config(secret, by_key, app.config.get("VONAGE_API_KEY"))
    except ValueError as exc:  # the message names the setting or the entry, never a secret
        raise ConfigError(str(exc)) from None
    if app.config["APP_ENV"] != "development":
        _refuse_weak_secrets(secret, by_key)
    if mode == "off":
        log.warning("SIGNATURE_VERIFICATION=off: callbacks are NOT verified; anyone can forge them")
    elif mode == "jwt-only":
        log.warning("SIGNATURE_VERIFICATION=jwt-only: SMS API callbacks are NOT verified")
    app.extensions["guard"] = Guard(keyring, app.config)


def get_guard(app: Flask) -> Guard:
    return app.extensions["guard"]


# A flood of forgeries is one log line per reason every few seconds, not one a request.
rejected = Tally(log, "rejected %(count)d request(s) from %(sources)s: %(what)s")


def record_rejection(app: Flask, *, path: str, remote_addr: str | None, error: SignatureError) -> None:
    """Log and count one rejection (the newest REJECTIONS_KEPT rows are kept). No I/O; never raises."""
    rejected.note(f"{error.reason} on {path}", remote_addr)
    get_storage(app).inbox.record_rejection(path=path, remote_addr=remote_addr, reason=error.reason, detail=str(error))
