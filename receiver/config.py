"""Configuration: every setting, its default, and how it is read from the environment.

Each key is documented once, in README.md and .env.example. Nothing here opens a connection.
"""
from __future__ import annotations

import os

import click


class ConfigError(click.ClickException):
    """A setting the app cannot start with: one line naming the setting and the fix, no traceback
    (the flask CLI prints it as `Error: ...`; gunicorn.conf.py prints it and stops)."""

    exit_code = 2


# name -> (default, parser). The parser turns the environment's string into the value's type.
_TRUE = {"1", "true", "yes", "on"}


def _bool(value: str) -> bool:
    return value.strip().lower() in _TRUE


def _str(value: str) -> str:
    return value


SETTINGS: dict[str, tuple[object, object]] = {
    "APP_ENV": ("production", _str),
    "INSTANCE_PATH": (os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "instance"), _str),
    "DATABASE_URL": (None, _str),
    "DATABASE_TIMEOUT_SECONDS": (5.0, float),
    "MAX_CONTENT_LENGTH": (1024 * 1024, int),
    "ADMIN_TOKEN": (None, _str),
    "WORKER_IN_WEB": (True, _bool),
    "WORKER_POLL_SECONDS": (0.5, float),
    "MAX_ATTEMPTS": (8, int),
    "RETRY_BASE_SECONDS": (5.0, float),
    "RETRY_MAX_SECONDS": (900.0, float),
    "LEASE_SECONDS": (300.0, float),
    "CONCAT_TIMEOUT_SECONDS": (600.0, float),
    "RETENTION_DAYS": (0.0, float),
    "VONAGE_SIGNATURE_SECRET": (None, _str),
    "VONAGE_SIGNATURE_SECRETS": (None, _str),
    "VONAGE_SIGNATURE_METHOD": ("md5hash", _str),
    "VONAGE_API_KEY": (None, _str),
    "VONAGE_API_SECRET": (None, _str),
    "VONAGE_APPLICATION_ID": (None, _str),
    "VONAGE_PRIVATE_KEY": (None, _str),
    "VONAGE_PRIVATE_KEY_PATH": (None, _str),
    "VONAGE_API_BASE": ("https://api.nexmo.com", _str),
    "VONAGE_MESSAGES_SANDBOX": (False, _bool),
    "SEND_RATE": (30.0, float),
    "SEND_UNKNOWN_WAIT_SECONDS": (300.0, float),
    "SEND_MAX_ATTEMPTS": (8, int),
    "AUTO_REPLY_TEXT": (None, _str),
    "SIGNATURE_VERIFICATION": ("on", _str),
    "JWT_IAT_LEEWAY_SECONDS": (300, int),
    "JWT_MAX_AGE_SECONDS": (0, int),
    "SMS_TIMESTAMP_WINDOW_SECONDS": (300, int),
    "PROXY_FIX_HOPS": (0, int),
    "REJECTIONS_KEPT": (1000, int),
    "LOG_LEVEL": ("INFO", _str),
    "LOG_FORMAT": ("json", _str),
    "METRICS_ENABLED": (True, _bool),
    "METRICS_TOKEN": (None, _str),
}


def defaults() -> dict:
    """The built-in value of every setting."""
    return {name: default for name, (default, _) in SETTINGS.items()}


def from_env(environ=os.environ) -> dict:
    """The settings present in the environment, parsed to their types.

    :raises ValueError: naming the variable whose value does not parse.
    """
    found = {}
    for name, (_, parse) in SETTINGS.items():
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            found[name] = parse(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a valid value") from None
    return found
