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

import jwt
import requests
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from receiver.sending.answers import describe, read_json, refusal, retry_after
from receiver.sending.deadline import Deadline, DeadlineAdapter
from receiver.sending.keys import private_key as loaded_private_key

API_BASE = "https://api.nexmo.com"
SANDBOX_BASE = "https://messages-sandbox.nexmo.com"

# Requests per second. Vonage documents 30 API requests/s per API key as the default for outbound SMS
# (https://api.support.vonage.com/hc/en-us/articles/203993598-What-is-the-Throughput-Limit-for-Outbound-SMS).
# We found no documented default for the Messages API itself: only its sandbox's 1 message/s
# (https://developer.nexmo.com/cn/messages/concepts/messages-api-sandbox), and WhatsApp's rate is set by Meta's
# tier of the sending number. So this is the documented 30/s; a 429 still means "slower" whatever the figure.
DEFAULT_SEND_RATE = 30
DEFAULT_TIMEOUT_SECONDS = 20.0  # the whole call: connect, the request, and the whole answer
MAX_ANSWER_BYTES = 64 * 1024  # Vonage's answers are a few hundred bytes; more is not read
_ERRNO = re.compile(r"^\[Errno -?[0-9]+\] ")  # "[Errno 111] Connection refused" reads better without it

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
        total_timeout: float = DEFAULT_TIMEOUT_SECONDS,
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
        self.total_timeout = total_timeout
        self.token_ttl = token_ttl
        self._session = self._new_session()

    @staticmethod
    def _new_session() -> requests.Session:
        session = requests.Session()
        # Zero retries (DeadlineAdapter), stated rather than left to the default: a POST resent by the HTTP
        # layer after its answer was lost would send the message twice.
        adapter = DeadlineAdapter()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def send_message(self, body: dict) -> SendResult:
        """Send one message body (see `build_message`) once, as given; return what Vonage accepted.

        :raises SendError: for every other outcome, classified by `kind`.
        """
        # identity: a compressed answer could be small on the wire and huge once decoded.
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._token()}"
        with Deadline(self.total_timeout) as deadline:
            try:
                # A redirect is not followed: requests would turn the POST into a GET.
                response = self._session.post(
                    self.url, json=body, headers=headers, auth=self._basic, allow_redirects=False, stream=True,
                    timeout=(min(self.timeout[0], self.total_timeout), min(self.timeout[1], self.total_timeout)))
                _read_capped(response)
            except (requests.RequestException, HTTPError, OSError) as exc:
                if deadline.expired:
                    raise _past_deadline(deadline, self.url) from exc
                if not isinstance(exc, requests.RequestException):  # while reading the body
                    exc = requests.ConnectionError(exc)
                raise _transport_error(exc, self.url, self.timeout) from exc
            finally:
                if deadline.expired:  # the timer may have cut a connection now back in the pool
                    self._session.close()
                    self._session = self._new_session()
        try:
            return _outcome(response, self._credentials_hint)
        except SendError as exc:
            if deadline.expired:  # an answer cut short at the deadline reads as whatever part of it came
                raise _past_deadline(deadline, self.url) from exc
            raise

    def close(self) -> None:
        self._session.close()

    def _token(self) -> str:
        # A fresh token per request rather than a cached one: signing costs about 0.25 ms, and a new `jti`
        # each time is what Vonage's own SDKs send.
        now = int(time.time())
        claims = {"application_id": self.application_id, "iat": now, "jti": str(uuid.uuid4()),
                  "exp": now + self.token_ttl}
        return jwt.encode(claims, self._key, algorithm="RS256")


def _read_capped(response: requests.Response) -> None:
    """Read at most MAX_ANSWER_BYTES of the answer into `response.content`; a longer one is cut off there
    (and its connection dropped), so it reads as no JSON at all."""
    content = response.raw.read(MAX_ANSWER_BYTES + 1)
    if len(content) > MAX_ANSWER_BYTES:
        response.raw.close()
        content = b""
    else:
        response.raw.release_conn()
    response._content, response._content_consumed = content, True


def _past_deadline(deadline: Deadline, url: str) -> SendError:
    if not deadline.connected:
        return SendError("retry", f"Could not connect to Vonage at {url} within {deadline.seconds:g}s "
                                  "(SEND_TIMEOUT_SECONDS): the message was not sent; send it again later")
    return SendError("unknown", f"Vonage's answer did not arrive in full within {deadline.seconds:g}s "
                                "(SEND_TIMEOUT_SECONDS): the message may have been accepted; look for its client_ref "
                                "in status webhooks before sending it again")


def _outcome(response: requests.Response, credentials_hint: str) -> SendResult:
    status = response.status_code
    body = read_json(response)
    if 200 <= status < 300:
        message_uuid = body.get("message_uuid") if isinstance(body, dict) else None
        if isinstance(message_uuid, str) and message_uuid:
            workflow_id = body.get("workflow_id")
            return SendResult(message_uuid, workflow_id if isinstance(workflow_id, str) else None, status)
        raise SendError("unknown", f"Vonage answered {status} without a message_uuid: the message may have been "
                                   "accepted; look for its client_ref in status webhooks before sending it again",
                        status=status)
    problem = body if isinstance(body, dict) and ("type" in body or "title" in body) else None
    summary = describe(problem, response)
    if status == 429:
        wait_seconds = retry_after(response.headers.get("Retry-After"))
        wait = f"after {wait_seconds:g}s" if wait_seconds is not None else "later, more slowly"
        raise SendError("retry", f"Vonage is rate limiting this account (429): send again {wait}. {summary}",
                        status=status, problem=problem, retry_after=wait_seconds)
    if status >= 500:
        raise SendError("retry", f"Vonage had a server error ({status}): send again later. {summary}",
                        status=status, problem=problem)
    raise SendError("permanent", refusal(status, problem, summary, credentials_hint, response),
                    status=status, problem=problem)


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


