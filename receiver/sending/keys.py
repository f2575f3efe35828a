"""The application's private key: read from VONAGE_PRIVATE_KEY or VONAGE_PRIVATE_KEY_PATH, checked by loading it.

Errors name the setting and what to give instead; none quotes the key, or cryptography's words about it.
"""
from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def load_private_key(text: str | None = None, path: str | None = None) -> str:
    """The application's private key as PEM text, from a setting's value or from a file, checked by loading it.

    Literal two-character `\\n` sequences (one-line PaaS variables), surrounding whitespace and quotes are undone.

    :raises ValueError: one line naming VONAGE_PRIVATE_KEY or VONAGE_PRIVATE_KEY_PATH; never the key itself.
    """
    has_text = bool(text and text.strip())
    if has_text and path:
        raise ValueError("set VONAGE_PRIVATE_KEY or VONAGE_PRIVATE_KEY_PATH, not both")
    if has_text:
        setting, raw = "VONAGE_PRIVATE_KEY", text
    elif path:
        setting = "VONAGE_PRIVATE_KEY_PATH"
        try:
            with open(path, encoding="utf-8") as f:
                raw = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
            raise ValueError(f"VONAGE_PRIVATE_KEY_PATH: cannot read {path} ({reason})") from None
    else:
        raise ValueError("set VONAGE_PRIVATE_KEY (the PEM text) or VONAGE_PRIVATE_KEY_PATH (a file holding it)")
    pem = _normalized_pem(raw)
    _parse_private_key(pem, setting)
    return pem


def public_key_pem(private_pem: str) -> str:
    """The public half of a PEM private key, as the PEM Vonage shows for the application."""
    key = _parse_private_key(private_pem, "private key")
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return public.decode("ascii")


def private_key(text: str, setting: str) -> rsa.RSAPrivateKey:
    """The RSA key in `text` (a PEM, as a setting may hold it: one line with \\n, quoted).

    :raises ValueError: naming `setting`, never the key.
    """
    return _parse_private_key(_normalized_pem(text), setting)


def _normalized_pem(raw: str) -> str:
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    text = text.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\r\n", "\n")
    return text.strip() + "\n"


def _parse_private_key(pem: str, setting: str) -> rsa.RSAPrivateKey:
    hint = "" if "-----BEGIN" in pem else " (to name a file, use VONAGE_PRIVATE_KEY_PATH)"
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except TypeError:
        raise ValueError(f"{setting} is an encrypted private key: use the unencrypted key Vonage generated") from None
    except (ValueError, UnsupportedAlgorithm):
        # cryptography's own message is not repeated: it can quote part of the key.
        raise ValueError(f"{setting} is not a PEM private key: give the whole key, from -----BEGIN PRIVATE KEY----- "
                         f"to -----END PRIVATE KEY-----{hint}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{setting} is not an RSA private key: Vonage application keys are RSA (RS256)")
    return key
