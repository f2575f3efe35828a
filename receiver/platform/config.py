"""Configuration: every setting, its default, and how it is read from the environment.

Each key is documented once, in docs/configuration.md and .env.example. Nothing here opens a connection.
"""
from __future__ import annotations

import os
from pathlib import Path

import click


class ConfigError(click.ClickException):
    """A setting the app cannot start with: one line naming the setting and the fix, no traceback
    (the flask CLI prints it as `Error: ...`; gunicorn.conf.py prints it and stops)."""

    exit_code = 2


# name -> (default, parser). The parser turns the environment's string into the value's type, and
# raises ValueError saying what it expects (the start error names the variable and repeats that).
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(value: str) -> bool:
    # Strict: a typo such as WORKER_IN_WEB=flase must not quietly mean false.
    word = value.strip().lower()
    if word not in _TRUE | _FALSE:
        raise ValueError("true or false")
    return word in _TRUE


def _int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError("a whole number") from None


def _float(value: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        raise ValueError("a number") from None


def _one_of(*choices: str):
    def parse(value: str) -> str:
        if value.strip().lower() not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value.strip().lower()

    return parse


# The checkout: app.py, instance/ and migrations/ live here (this file is receiver/platform/config.py).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _str(value: str) -> str:
    return value


SETTINGS: dict[str, tuple[object, object]] = {
    "APP_ENV": ("production", _str),
    "INSTANCE_PATH": (str(PROJECT_ROOT / "instance"), _str),
    "DATABASE_URL": (None, _str),
    "DATABASE_TIMEOUT_SECONDS": (5.0, _float),
    "MAX_CONTENT_LENGTH": (1024 * 1024, _int),
    "ADMIN_TOKEN": (None, _str),
    "SESSION_HOURS": (12.0, _float),
    "SESSION_IDLE_MINUTES": (60.0, _float),
    "WORKER_IN_WEB": (True, _bool),
    "WORKER_POLL_SECONDS": (0.5, _float),
    "MAX_ATTEMPTS": (8, _int),
    "RETRY_BASE_SECONDS": (5.0, _float),
    "RETRY_MAX_SECONDS": (900.0, _float),
    "LEASE_SECONDS": (300.0, _float),
    "CONCAT_TIMEOUT_SECONDS": (600.0, _float),
    "RETENTION_DAYS": (0.0, _float),
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
    "SEND_RATE": (30.0, _float),
    "SEND_UNKNOWN_WAIT_SECONDS": (300.0, _float),
    "SEND_MAX_ATTEMPTS": (8, _int),
    "SEND_TIMEOUT_SECONDS": (20.0, _float),
    "SEND_CONCURRENCY": (4, _int),
    "SEND_MAX_RETRY_AFTER_SECONDS": (3600.0, _float),
    "AUTO_REPLY_TEXT": (None, _str),
    "AUTO_REPLY_INTERVAL_SECONDS": (3600.0, _float),
    "REPLY_MAX_PER_MINUTE": (10, _int),
    "OPT_OUT_KEYWORDS": (None, _str),
    "OPT_IN_KEYWORDS": (None, _str),
    "OPT_OUT_REPLY_TEXT": (None, _str),
    "HELP_TEXT": (None, _str),
    # Vonage's documented longest wait for a final status: SMS and MMS 72 h, Viber 14 days, the others 30 days.
    "SILENT_AFTER_SECONDS_SMS": (259200.0, _float),
    "SILENT_AFTER_SECONDS_MMS": (259200.0, _float),
    "SILENT_AFTER_SECONDS_WHATSAPP": (2592000.0, _float),
    "SILENT_AFTER_SECONDS_MESSENGER": (2592000.0, _float),
    "SILENT_AFTER_SECONDS_VIBER_SERVICE": (1209600.0, _float),
    "SILENT_AFTER_SECONDS_RCS": (2592000.0, _float),
    "SIGNATURE_VERIFICATION": ("on", _str),
    "JWT_IAT_LEEWAY_SECONDS": (300, _int),
    "JWT_MAX_AGE_SECONDS": (0, _int),
    "SMS_TIMESTAMP_WINDOW_SECONDS": (300, _int),
    "PROXY_FIX_HOPS": (0, _int),
    "REJECTIONS_KEPT": (1000, _int),
    "LOG_LEVEL": ("INFO", _one_of("debug", "info", "warning", "error", "critical")),
    "LOG_FORMAT": ("json", _one_of("json", "text")),
    "METRICS_ENABLED": (True, _bool),
    "METRICS_TOKEN": (None, _str),
}


# Read by gunicorn (gunicorn.conf.py), not by the app, and checked by from_env too: gunicorn parses
# WEB_CONCURRENCY itself as it is imported, before gunicorn.conf.py runs, so a bad value there is a
# traceback from gunicorn's code. Checked here, it stops the release step (`flask init-db`, run before
# the web processes start: Procfile, systemd's ExecStartPre) in one line.
SERVER_SETTINGS = ("PORT", "WEB_CONCURRENCY", "WEB_THREADS", "GUNICORN_TIMEOUT")


def defaults() -> dict:
    """The built-in value of every setting."""
    return {name: default for name, (default, _) in SETTINGS.items()}


def from_env(environ=os.environ) -> dict:
    """The settings present in the environment, parsed to their types.

    :raises ConfigError: naming the variable whose value does not parse, and what it expects.
    """
    found = {}
    for name, (_, parse) in SETTINGS.items():
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            found[name] = parse(raw)
        except ValueError as expected:
            raise ConfigError(f"{name}={raw!r}: expected {expected}") from None
    for name in SERVER_SETTINGS:
        raw = environ.get(name)
        if raw and not raw.strip().isdigit():
            raise ConfigError(f"{name}={raw!r}: expected a whole number")
    return found


def refuse_ephemeral_database(settings: dict, environ=os.environ) -> None:
    """Refuse SQLite on a Heroku dyno (Heroku sets DYNO on every one): its disk is wiped at every
    restart, and every callback the app acknowledged with it. Development may try it there.

    :raises ConfigError: DYNO is set, the database is SQLite (DATABASE_URL unset or sqlite:) and
        APP_ENV is not development.
    """
    url = settings.get("DATABASE_URL") or "sqlite:"
    if environ.get("DYNO") and url.startswith("sqlite") and settings["APP_ENV"] != "development":
        which = "is SQLite" if settings.get("DATABASE_URL") else "is not set"
        raise ConfigError(f"DATABASE_URL {which}, so callbacks would be kept on this dyno's disk, which Heroku "
                          "wipes at every restart: add PostgreSQL with `heroku addons:create heroku-postgresql` "
                          "(it sets DATABASE_URL)")
