"""The signature secrets per Vonage API key, read from VONAGE_SIGNATURE_SECRET and VONAGE_SIGNATURE_SECRETS.

No secret is ever part of a message or a repr: errors name the setting, the api key or the entry's position.
"""
from collections.abc import Mapping, Sequence


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
