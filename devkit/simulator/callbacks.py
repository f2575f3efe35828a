"""What the simulator sends back to the receiver: status sequences, inbound replies, and their delivery,
signed with receiver.webhooks.signatures.sign_jwt and retried as Vonage retries. Payloads come from devkit.samples.
"""
from __future__ import annotations

import heapq
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests

from devkit import samples
from receiver.webhooks.signatures import sign_jwt

# Channels that report `read` (Vonage lists it for WhatsApp, Messenger, Viber and RCS); SMS and MMS stop at `delivered`.
READ_RECEIPT_CHANNELS = ("whatsapp", "messenger", "viber_service", "rcs")
FAILED_STATUSES = ("rejected", "undeliverable")


def plan_statuses(channel: str, rng: random.Random, *, reject_share: float, out_of_order_share: float) -> list[str]:
    """The statuses one message reports, in the order they will arrive."""
    if rng.random() < reject_share:
        # A rejected message never got as far as `submitted`; an undeliverable one did.
        return ["rejected"] if rng.random() < 0.5 else ["submitted", "undeliverable"]
    statuses = ["submitted", "delivered"] + (["read"] if channel in READ_RECEIPT_CHANNELS else [])
    if rng.random() < out_of_order_share:
        # Vonage queues each event on its own, so a later status can overtake an earlier one.
        first = rng.randrange(len(statuses) - 1)
        statuses[first], statuses[first + 1] = statuses[first + 1], statuses[first]
    return statuses


def status_payload(status: str, message: dict, message_uuid: str, version: str) -> dict:
    """The status callback for an accepted `message` body, in webhook `version` v1 or v0.1."""
    payload = samples.message_status(status, message["channel"], version, message_uuid=message_uuid,
                                     timestamp=_now(), client_ref=message.get("client_ref"))
    _set_address(payload, "to", message["to"])
    _set_address(payload, "from", message["from"])
    return payload


def inbound_payload(channel: str, *, text: str, from_: str | None = None, to: str | None = None,
                    quoting: tuple[str, str] | None = None) -> dict:
    """An inbound text from a customer; `quoting` is (message_uuid, its sender) of the message answered."""
    overrides = {"from_": from_, "to": to}
    payload = samples.inbound_message(channel, "text", text=text, timestamp=_now(),
                                      **{key: value for key, value in overrides.items() if value is not None})
    if channel == "sms":
        payload["sms"]["keyword"] = text.split()[0].upper() if text.split() else ""
    if quoting and channel == "whatsapp":
        payload["context_status"] = "available"
        payload["context"] = {"message_uuid": quoting[0], "message_from": quoting[1]}
    elif quoting and channel == "viber_service":
        payload["context"] = {"message_uuid": quoting[0]}
    return payload


@dataclass
class Attempt:
    status: int | None  # the receiver's HTTP status; None when it did not answer
    error: str  # why there was no answer, or why nothing was sent
    seconds: float


@dataclass
class Callback:
    """One callback and every attempt to deliver it. `kind` is "message-status" or "inbound-message"."""

    kind: str
    url: str | None
    payload: dict
    duplicate: bool = False  # a second copy of the same body, as Vonage sends after a lost 2xx
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @property
    def delivered(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].status is not None and 200 <= self.attempts[-1].status < 300


class CallbackSender:
    """Delivers scheduled callbacks in due order from one thread; 429, 5xx and no answer are retried
    `retries` times after `backoff`, 2 x `backoff`, ... seconds (Vonage: about 5 s, doubling). 4xx is final.
    """

    def __init__(self, *, secret: str | None, api_key: str, application_id: str | None,
                 timeout: tuple[float, float], retries: int, backoff: float,
                 on_attempt: Callable[[Callback], None] | None = None):
        self.secret = secret
        self.api_key = api_key
        self.application_id = application_id
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.on_attempt = on_attempt
        self.callbacks: list[Callback] = []
        self._heap: list[tuple[float, int, Callback]] = []
        self._order = itertools.count()
        self._in_flight = 0
        self._stopping = False
        self._cond = threading.Condition()
        self._session = requests.Session()
        self._session.trust_env = False  # Vonage calls the receiver directly, through no proxy of ours
        self._thread = threading.Thread(target=self._run, name="simulator-callbacks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the attempt in flight; callbacks still scheduled are dropped."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        self._session.close()

    def schedule(self, callback: Callback, due: float) -> None:
        """Send `callback` at time.monotonic() `due`."""
        with self._cond:
            self.callbacks.append(callback)
            heapq.heappush(self._heap, (due, next(self._order), callback))
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> None:
        """Wait until every scheduled callback, retries included, has gone out.

        :raises TimeoutError: some are still due after `timeout` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: not self._heap and not self._in_flight, timeout):
                raise TimeoutError(f"{len(self._heap) + self._in_flight} callbacks still due after {timeout:g}s")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (self._heap and self._heap[0][0] <= time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopping:
                    return
                _, _, callback = heapq.heappop(self._heap)
                self._in_flight += 1
            retry_in = None
            try:
                retry_in = self._attempt(callback)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    if retry_in is not None:
                        heapq.heappush(self._heap, (time.monotonic() + retry_in, next(self._order), callback))
                    self._cond.notify_all()

    def _attempt(self, callback: Callback) -> float | None:
        """Send `callback` once; return the seconds before the next attempt, None when it is done."""
        if callback.url is None or self.secret is None:
            missing = "receiver URL" if callback.url is None else "signature secret"
            self._record(callback, Attempt(None, f"not sent: no {missing} configured", 0.0))
            return None
        body = callback.body
        token = sign_jwt(body, self.secret, api_key=self.api_key, application_id=self.application_id)
        started = time.perf_counter()
        try:
            # Not following redirects: nothing documents that Vonage does for webhooks.
            response = self._session.post(callback.url, data=body, timeout=self.timeout, allow_redirects=False,
                                          headers={"Authorization": f"Bearer {token}",
                                                   "Content-Type": "application/json"})
            response.close()
            status, error = response.status_code, ""
        except requests.RequestException as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:200]
        self._record(callback, Attempt(status, error, time.perf_counter() - started))
        retryable = status is None or status == 429 or status >= 500
        if retryable and len(callback.attempts) <= self.retries:
            return self.backoff * 2 ** (len(callback.attempts) - 1)
        return None

    def _record(self, callback: Callback, attempt: Attempt) -> None:
        callback.attempts.append(attempt)
        if self.on_attempt is not None:
            self.on_attempt(callback)


def _set_address(payload: dict, side: str, value: str) -> None:
    # v1 carries a plain string; v0.1 an object such as {"type": "sms", "number": ...} or {"type": ..., "id": ...}.
    address = payload[side]
    if isinstance(address, dict):
        address["id" if "id" in address else "number"] = value
    else:
        payload[side] = value


def _now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
