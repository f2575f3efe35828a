"""Send one message through Vonage's Messages API: load the application key, sign, POST, classify the answer.

Uses `requests` and PyJWT only. Must not import Flask or touch the database, and never sends a POST twice
by itself: `SendError.kind` tells the caller (the outbox) whether sending again is safe. Bodies are built and
checked in receiver.sending.bodies, the application's key read in receiver.sending.keys.
"""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import jwt
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from receiver.sending.keys import private_key as loaded_private_key

API_BASE = "https://api.nexmo.com"
SANDBOX_BASE = "https://messages-sandbox.nexmo.com"

# Requests per second. Vonage documents 30 API requests/s per API key as the default for outbound SMS
# (https://api.support.vonage.com/hc/en-us/articles/203993598-What-is-the-Throughput-Limit-for-Outbound-SMS).
# We found no documented default for the Messages API itself: only its sandbox's 1 message/s
# (https://developer.nexmo.com/cn/messages/concepts/messages-api-sandbox), and WhatsApp's rate is set by Meta's
# tier of the sending number. So this is the documented 30/s; a 429 still means "slower" whatever the figure.
DEFAULT_SEND_RATE = 30
_ERRNO = re.compile(r"^\[Errno -?[0-9]+\] ")  # "[Errno 111] Connection refused" reads better without it

# What to do about the error codes Vonage puts at the end of a problem's `type` (its error code reference).
ERROR_HINTS = {
    "1000": "Vonage is throttling this account: send more slowly.",
    "1010": "Fix the parameters listed.",
    "1020": "Fix the parameters listed.",
    "1022": "Check the template's name, locale and parameters match a template approved for this WhatsApp number.",
    "1030": "Vonage had an internal error: retry later.",
    "1050": "The recipient is barred from receiving messages from this sender: do not retry.",
    "1070": "The account's credit or quota is used up: top up the account, then send again.",
    "1120": "`from` must be a number or ID this account owns on this channel, linked to the application.",
    "1340": "The recipient has not written in the last 24 hours: send an approved template "
            "(message_type \"template\") instead.",
}


class SendError(Exception):
    """A send that did not end in an accepted message. `kind` says what is safe next:

    - "retry": Vonage did not take the message (429, 5xx, or the request never left this machine); send it
      again later, after `retry_after` seconds when that is set.
    - "unknown": it may have been accepted (no answer, or an unusable one). Vonage has no idempotency key:
      look for its `client_ref` in status webhooks before sending it again.
    - "permanent": Vonage refused this message; sending it again fails the same way.

    `status` is the HTTP status (None without an answer), `problem` the RFC 7807 body when there was one.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None, problem: dict | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.problem = problem
        self.retry_after = retry_after


@dataclass(frozen=True)
class SendResult:
    """What Vonage accepted: the message's uuid (its status webhooks carry it), and a failover's workflow id."""

    message_uuid: str
    workflow_id: str | None
    status: int


class MessagesClient:
    """POST /v1/messages with the application's JWT, or HTTP Basic when no private key is given.

    Keeps one connection pool: give each thread its own client, as requests.Session is not thread-safe.
    """

    def __init__(
        self,
        application_id: str | None = None,
        private_key: str | None = None,
        *,
        api_key: str | None = None,
        api_secret: str | None = None,
        api_base: str = API_BASE,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        token_ttl: int = 300,
    ):
        self._key = self._basic = None
        if private_key:
            if not application_id:
                raise ValueError("VONAGE_APPLICATION_ID is required to send with VONAGE_PRIVATE_KEY")
            self._key = loaded_private_key(private_key, "VONAGE_PRIVATE_KEY")
            self._credentials_hint = ("check VONAGE_APPLICATION_ID and that the private key (VONAGE_PRIVATE_KEY "
                                      "or VONAGE_PRIVATE_KEY_PATH) belongs to that application")
        elif api_key and api_secret:
            self._basic = (api_key, api_secret)
            self._credentials_hint = "check VONAGE_API_KEY and VONAGE_API_SECRET"
        else:
            raise ValueError("to send messages set VONAGE_APPLICATION_ID with VONAGE_PRIVATE_KEY (or "
                             "VONAGE_PRIVATE_KEY_PATH), or VONAGE_API_KEY with VONAGE_API_SECRET")
        self.application_id = application_id
        self.url = api_base.rstrip("/") + "/v1/messages"
        self.timeout = (connect_timeout, read_timeout)
        self.token_ttl = token_ttl
        self._session = requests.Session()
        # Zero retries, stated rather than left to the default: a POST resent by the HTTP layer after its
        # answer was lost would send the message twice.
        adapter = HTTPAdapter(max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def send_message(self, body: dict) -> SendResult:
        """Send one message body (see `build_message`) once, as given; return what Vonage accepted.

        :raises SendError: for every other outcome, classified by `kind`.
        """
        headers = {"Accept": "application/json"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._token()}"
        try:
            # A redirect is not followed: requests would turn the POST into a GET.
            response = self._session.post(self.url, json=body, headers=headers, auth=self._basic,
                                          timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise _transport_error(exc, self.url, self.timeout) from exc
        return _outcome(response, self._credentials_hint)

    def close(self) -> None:
        self._session.close()

    def _token(self) -> str:
        # A fresh token per request rather than a cached one: signing costs about 0.25 ms, and a new `jti`
        # each time is what Vonage's own SDKs send.
        now = int(time.time())
        claims = {"application_id": self.application_id, "iat": now, "jti": str(uuid.uuid4()),
                  "exp": now + self.token_ttl}
        return jwt.encode(claims, self._key, algorithm="RS256")


def _outcome(response: requests.Response, credentials_hint: str) -> SendResult:
    status = response.status_code
    body = _json(response)
    if 200 <= status < 300:
        message_uuid = body.get("message_uuid") if isinstance(body, dict) else None
        if isinstance(message_uuid, str) and message_uuid:
            workflow_id = body.get("workflow_id")
            return SendResult(message_uuid, workflow_id if isinstance(workflow_id, str) else None, status)
        raise SendError("unknown", f"Vonage answered {status} without a message_uuid: the message may have been "
                                   "accepted; look for its client_ref in status webhooks before sending it again",
                        status=status)
    problem = body if isinstance(body, dict) and ("type" in body or "title" in body) else None
    summary = _describe(problem, response)
    if status == 429:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        wait = f"after {retry_after:g}s" if retry_after is not None else "later, more slowly"
        raise SendError("retry", f"Vonage is rate limiting this account (429): send again {wait}. {summary}",
                        status=status, problem=problem, retry_after=retry_after)
    if status >= 500:
        raise SendError("retry", f"Vonage had a server error ({status}): send again later. {summary}",
                        status=status, problem=problem)
    raise SendError("permanent", _refusal(status, problem, summary, credentials_hint, response),
                    status=status, problem=problem)


def _refusal(status: int, problem: dict | None, summary: str, credentials_hint: str,
             response: requests.Response) -> str:
    if status == 401:
        return f"Vonage refused the credentials (401): {credentials_hint}. {summary}"
    code = _error_code(problem)
    if code in ERROR_HINTS:
        return f"Vonage refused the message ({status}, error {code}): {summary}. {ERROR_HINTS[code]}"
    if status in (400, 422):
        return f"Vonage refused the message body ({status}): {summary}"
    if status == 403:
        return (f"Vonage refused to send ({status}): {summary}. Check the sender is linked to this application "
                "and the channel is enabled for the account.")
    if 300 <= status < 400:
        return f"Vonage answered a redirect ({status} to {response.headers.get('Location')}): check the API base URL"
    return f"Vonage answered {status}: {summary}"


def _transport_error(exc: requests.RequestException, url: str, timeout: tuple[float, float]) -> SendError:
    may_have_left = ("the message may have been accepted; look for its client_ref in status webhooks before "
                     "sending it again")
    # ConnectTimeout is also a ConnectionError and a Timeout: it is tested first, and nothing was sent.
    if isinstance(exc, requests.ConnectTimeout):
        return SendError("retry", f"Could not connect to Vonage at {url} within {timeout[0]:g}s: "
                                  "the message was not sent; send it again later")
    if isinstance(exc, requests.ReadTimeout):
        return SendError("unknown", f"Vonage did not answer within {timeout[1]:g}s: {may_have_left}")
    cause = _root_cause(exc)
    reason = _ERRNO.sub("", str(cause).rpartition(": ")[2]) or type(cause).__name__
    never_sent = isinstance(exc, (requests.exceptions.SSLError, requests.exceptions.ProxyError)) or isinstance(
        cause, (NewConnectionError, ConnectTimeoutError))
    if never_sent:
        return SendError("retry", f"Could not connect to Vonage at {url} ({reason}): the message was not sent; "
                                  "check network access, DNS and proxy settings, then send it again")
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError)):
        return SendError("unknown", f"The connection to Vonage broke during the request ({reason}): {may_have_left}")
    # Raised before anything is sent (a malformed URL, a body that is not JSON): the same call fails again.
    return SendError("permanent", f"Could not send to {url}: {reason}")


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost urllib3 or socket error that a requests exception wraps."""
    for _ in range(10):  # bounded: wrappers nest two or three deep
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((arg for arg in reversed(exc.args) if isinstance(arg, BaseException)), None)
        if inner is None or inner is exc:
            break
        exc = inner
    return exc


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _error_code(problem: dict | None) -> str | None:
    if not problem:
        return None
    code = str(problem.get("type", "")).rpartition("#")[2]
    if code.isdigit():
        return code
    title = str(problem.get("title", ""))
    return title if title.isdigit() else None


def _describe(problem: dict | None, response: requests.Response) -> str:
    """One line from a problem body: title, detail and the invalid parameters; else the start of the body."""
    if problem is None:
        text = response.text.strip()
        return text[:200] if text else "no details in the response"
    parts = [str(problem[key]) for key in ("title", "detail") if problem.get(key)]
    invalid = [item for item in problem.get("invalid_parameters") or [] if isinstance(item, dict)]
    if invalid:
        fields = ", ".join(f"{item.get('name', '?')} ({item.get('reason', 'invalid')})" for item in invalid)
        parts.append(f"invalid parameters: {fields}")
    return ": ".join(part.rstrip(". ") for part in parts) or "no details in the response"


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
