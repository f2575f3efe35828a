"""What makes ADMIN_TOKEN and METRICS_TOKEN tokens: long, varied, none of the app's other secrets, and
slow to guess (receiver.operator.throttle).

Checked at start outside development (a weak token stops the app in one line naming the setting)
and by `flask vonage doctor`. Never shows a token or a secret.
"""
from __future__ import annotations

from flask import Flask

from receiver.operator.throttle import Throttle
from receiver.platform.config import ConfigError
from receiver.webhooks.keyring import secrets_by_setting

MIN_LENGTH = 24
MIN_DISTINCT = 10
NAMES = ("ADMIN_TOKEN", "METRICS_TOKEN")
FIX = "generate one with `openssl rand -hex 32`"


def weakness(token: str, others: dict[str, str]) -> str | None:
    """Why `token` is not a token (too short, too little variety, equal to one of `others`, a
    setting name -> secret), or None."""
    if len(token) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters"
    if len(set(token)) < MIN_DISTINCT:
        return f"has fewer than {MIN_DISTINCT} different characters"
    for name, secret in others.items():
        if secret and token == secret:
            return f"is the same as {name}"
    return None


def _other_secrets(config) -> dict[str, str]:
    found = {name: secret for name, values in secrets_by_setting(config.get("VONAGE_SIGNATURE_SECRET"),
                                                                  config.get("VONAGE_SIGNATURE_SECRETS")).items()
             for secret in values}
    if config.get("VONAGE_API_SECRET"):
        found["VONAGE_API_SECRET"] = config["VONAGE_API_SECRET"]
    return found


def problems(config) -> list[str]:
    """One line per configured operator token that is not a token, naming the setting and the fix."""
    others = _other_secrets(config)
    found = []
    for name in NAMES:
        token = config.get(name)
        problem = weakness(token, others) if token else None
        if problem:
            found.append(f"{name} {problem}: {FIX}")
    return found


def init_app(app: Flask) -> None:
    """The limit on wrong tokens; outside development, refuse to start with a weak ADMIN_TOKEN or METRICS_TOKEN.

    :raises ConfigError: naming the first such setting.
    """
    app.extensions["throttle"] = Throttle()
    if app.config["APP_ENV"] == "development":
        return
    found = problems(app.config)
    if found:
        raise ConfigError(found[0])
