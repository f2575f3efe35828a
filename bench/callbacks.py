"""Distinct, correctly signed callbacks in a realistic mix, as raw HTTP/1.1 requests ready to replay.

Signed by receiver.operator.signed, the project's one builder of callbacks as Vonage sends them (JWT for
Messages, `sig` for the SMS API), from devkit.samples so every request carries fresh ids: the
project never sees a duplicate.
"""
from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import urlsplit

from devkit import samples
from receiver.operator.signed import sign_request
from receiver.platform.formats import compact_json as compact  # noqa: F401  (micro.py takes it from here)

SECRET = "bench-signature-secret-Jr4mW8qZ2tN6"
API_KEY = "a1b2c3d4"
APPLICATION_ID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
SMS_METHOD = "sha256"

MIX = samples.TRAFFIC_MIX
PATHS = {
    "message-status": "/webhooks/message-status",
    "inbound-message": "/webhooks/inbound-message",
    "inbound-sms": "/webhooks/inbound-sms",
    "delivery-receipt": "/webhooks/delivery-receipt",
}


def server_env() -> dict[str, str]:
    """The settings a server needs to accept what this module generates (pre-generated, so wide windows)."""
    return {
        "VONAGE_SIGNATURE_SECRET": SECRET,
        "VONAGE_SIGNATURE_METHOD": SMS_METHOD,
        "SMS_TIMESTAMP_WINDOW_SECONDS": "86400",
        "JWT_IAT_LEEWAY_SECONDS": "86400",
    }


def _http(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "User-Agent: Vonage-bench/1.0"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _request(kind: str, via: str, payload: dict) -> bytes:
    signed = sign_request(kind, payload, "http://127.0.0.1", SECRET, API_KEY, SMS_METHOD, via.lower(),
                          APPLICATION_ID)
    target = urlsplit(signed.url)
    return _http(signed.method, target.path + (f"?{target.query}" if target.query else ""), signed.headers,
                 signed.body)


def generate(count: int, seed: int | None = None) -> list[bytes]:
    """`count` distinct signed requests in the samples.TRAFFIC_MIX proportions, shuffled."""
    return [_request(kind, via, payload) for kind, via, payload in samples.traffic(count, random.Random(seed))]


def write_slices(requests: list[bytes], directory: Path, name: str, slices: int) -> str:
    """Write one file per wrk thread (`<name>-<i>.req`, each a run of "<length>\\n<raw request>").

    Returns the prefix the Lua script takes. Thread i replays only its own file, so no request repeats.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(slices):
        with open(directory / f"{name}-{i + 1}.req", "wb") as f:
            for raw in requests[i::slices]:
                f.write(b"%d\n" % len(raw))
                f.write(raw)
    return str(directory / name)
