"""Callbacks signed exactly as Vonage signs them, and sent the way Vonage sends them.

The one builder of signed requests: `flask vonage trigger`, `doctor` and `events resend`, the
console's "copy as curl", the tests' load generator and the benchmark all use it (the signature
tests keep an independent signer on purpose, to check this one). Needs no app or database.
"""
from __future__ import annotations

import shlex
import time
import uuid
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlencode

import requests

from receiver.kinds import KINDS
from receiver.operator.applications import webhook_urls
from receiver.platform.formats import compact_json, stored_object
from receiver.webhooks.payloads import sms_params
from receiver.webhooks.signatures import sign_jwt, sign_sms

# How SMS API callbacks arrive, per the dashboard's "Webhook format": GET, POST (form), POST-JSON.
VIAS = ("get", "form", "json")
# Vonage waits 3 s for a connection and 15 s for an answer before it retries.
VONAGE_TIMEOUT = (3.0, 15.0)


@dataclass(frozen=True)
class SignedRequest:
    """One callback as it goes over the wire."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Sent(NamedTuple):
    """What came back: the answer's status and how long it took, with the request that was sent."""

    request: SignedRequest
    status: int
    seconds: float
    error: str  # this app's error code from a JSON error body ("bad_signature"), else ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def sign_request(kind, payload, url, secret, api_key, method, via="json", application_id=None) -> SignedRequest:
    """The request Vonage would send to the `kind` webhook of the deployment at base `url`.

    Messages kinds: `payload` is a dict (sent as compact JSON) or the exact body bytes, under a fresh JWT.
    SMS API kinds: `payload` holds the parameters; they get `api_key`, a fresh timestamp, nonce and `sig`
    (SMS signature `method`) and go `via` the query string, a form body or a JSON body.

    :raises ValueError: `url` is not an absolute http(s) URL, or `method` or `via` is unknown.
    """
    target = webhook_urls(url)[KINDS[kind].url_setting]
    if KINDS[kind].transport.signature == "jwt":
        body = payload if isinstance(payload, bytes) else compact_json(payload)
        token = sign_jwt(body, secret, api_key=api_key, application_id=application_id)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return SignedRequest("POST", target, headers, body)
    params = sign_sms(
        {**payload, "api-key": api_key}, secret, method, timestamp=int(time.time()), nonce=str(uuid.uuid4())
    )
    if via == "get":
        return SignedRequest("GET", f"{target}?{urlencode(params)}", {}, b"")
    if via == "form":
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        return SignedRequest("POST", target, form, urlencode(params).encode())
    if via == "json":
        return SignedRequest("POST", target, {"Content-Type": "application/json"}, compact_json(params))
    raise ValueError(f"via must be one of {VIAS}, got {via!r}")


def send_signed(kind, payload, url, secret, api_key, method, via="json", *, application_id=None,
                timeout=VONAGE_TIMEOUT) -> Sent:
    """Send one signed callback (see `sign_request`) and wait for the answer as long as Vonage would.

    :raises requests.RequestException: nothing answered in time (refused, DNS, TLS, timeout).
    """
    request = sign_request(kind, payload, url, secret, api_key, method, via, application_id)
    started = time.perf_counter()
    # A redirect is shown, not followed: nothing documents that Vonage follows one.
    response = requests.request(request.method, request.url, headers=request.headers, data=request.body or None,
                                timeout=timeout, allow_redirects=False)
    return Sent(request, response.status_code, time.perf_counter() - started, _error_code(response))


def curl_command(kind, payload, url, secret, api_key, method, via="json", application_id=None) -> str:
    """The same signed request as one copy-pasteable curl command."""
    request = sign_request(kind, payload, url, secret, api_key, method, via, application_id)
    method_args = [] if request.method == "GET" else ["-X", request.method]
    args = ["curl", "-sS", "-i", *method_args, request.url]
    for name, value in request.headers.items():
        args += ["-H", f"{name}: {value}"]
    if request.body:
        args += ["--data-binary", request.body.decode("utf-8")]
    return shlex.join(args)



def _error_code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


class Replayable(NamedTuple):
    """What to sign to send a stored callback again the way it first arrived."""

    payload: dict | bytes  # the stored bytes for Messages kinds (a new token hashes exactly them), else the params
    via: str
    api_key: str | None  # whose secret signed it
    application_id: str | None


def replayable(row) -> Replayable:
    """A stored event's request, to be signed afresh (`flask events resend`, the console's curl).

    :raises receiver.webhooks.payloads.DuplicateParameter: an SMS API callback with a parameter twice.
    """
    if KINDS[row.kind].transport.signature == "jwt":
        headers = stored_object(row.headers)
        return Replayable(row.body, "json", headers.get("api_key"), headers.get("application_id"))
    payload = sms_params(row.query, row.body, row.content_type)
    # Read as sms_params reads it: query string, else a JSON body, else a form body.
    is_json = "json" in row.content_type or row.body.lstrip()[:1] == b"{"
    return Replayable(payload, "get" if row.query else ("json" if is_json else "form"), payload.get("api-key"), None)


def marked(kind: str, payload: dict, test: str) -> dict:
    """`payload` marked as this app's own test callback ("trigger" or "doctor", see schemas.TEST_MARKS):
    a handler sees `event.test`, and the worker never dispatches a doctor's one."""
    return {**payload, KINDS[kind].transport.test_mark: test}
