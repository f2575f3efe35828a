"""A bounded load generator for the fault tests: distinct, correctly signed callbacks, sent and retried
the way Vonage does.

Callbacks are built from devkit.samples in a realistic mix and signed by receiver.operator.signed, the
project's one builder of signed callbacks (tests/conftest.py's `Vonage` keeps an independent signer
on purpose, to check it). `send` delivers them from a few threads and retries anything that got no answer or a
5xx, with a short backoff, until it gets a 2xx or the deadline passes; its `Report` says which
deliveries were acknowledged, after how many attempts, and what every attempt was answered.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from devkit import samples
from receiver.operator.signed import sign_request
from tests.conftest import API_KEY, SECRET, SMS_METHOD
from tests.recording_app import effect_key

EVENT_KINDS = {"message-status": "status", "delivery-receipt": "status",
               "inbound-message": "inbound", "inbound-sms": "inbound"}


@dataclass(frozen=True, eq=False)
class Callback:
    """One signed request, ready to send as many times as needed (a retry or a duplicate is the same bytes)."""

    kind: str  # the route's kind, as stored in events.kind
    method: str
    path: str  # with the query string for a GET
    body: bytes
    headers: dict
    message_id: str
    status: str | None  # None for inbound messages (events.status is None for them too)

    @property
    def key(self) -> str:
        """The natural identity the recording app writes to test_effects when this callback is dispatched."""
        return effect_key(EVENT_KINDS[self.kind], self.message_id, self.status)


def _signed(kind: str, payload: dict, via: str, secret: str, api_key: str, method: str):
    request = sign_request(kind, payload, "http://receiver", secret, api_key, method, via)
    target = urlsplit(request.url)
    return request, target.path + (f"?{target.query}" if target.query else "")


def messages_callback(kind: str, payload: dict, *, secret: str = SECRET, api_key: str = API_KEY) -> Callback:
    request, path = _signed(kind, payload, "json", secret, api_key, SMS_METHOD)
    status = payload["status"] if kind == "message-status" else None
    return Callback(kind, request.method, path, request.body, request.headers, payload["message_uuid"], status)


def sms_callback(kind: str, params: dict, via: str = "GET", *, secret: str = SECRET, api_key: str = API_KEY,
                 method: str = SMS_METHOD) -> Callback:
    request, path = _signed(kind, params, via.lower(), secret, api_key, method)
    status = params.get("status") if kind == "delivery-receipt" else None
    return Callback(kind, request.method, path, request.body, request.headers, params["messageId"], status)


def build(count: int, seed: int | None = None) -> list[Callback]:
    """`count` distinct signed callbacks in the samples.TRAFFIC_MIX proportions (fresh ids, no shared keys)."""
    return [
        messages_callback(kind, payload) if via == "json" else sms_callback(kind, payload, via)
        for kind, via, payload in samples.traffic(count, random.Random(seed))
    ]


@dataclass
class Report:
    """What one `send` run saw. A delivery is one intended send of a callback; an attempt is one HTTP request."""

    deliveries: int
    seconds: float = 0.0
    answers: Counter = field(default_factory=Counter)  # status code (or "no answer") -> attempts
    attempts: list[int] = field(default_factory=list)  # per delivery
    final: list = field(default_factory=list)  # per delivery: the last answer (200, 401, "no answer"...) or None
    # Every attempt: (sent at, answered at, status code or "no answer"), time.monotonic() seconds.
    timeline: list[tuple[float, float, object]] = field(default_factory=list)
    done: int = 0  # deliveries finished so far, readable while `send` runs

    @property
    def acknowledged(self) -> list[int]:
        """Indexes of the deliveries that got a 2xx."""
        return [i for i, code in enumerate(self.final) if isinstance(code, int) and 200 <= code < 300]

    @property
    def retries(self) -> int:
        return sum(self.attempts) - sum(1 for a in self.attempts if a)

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.answers.items(), key=str))
        return (f"{self.deliveries} deliveries in {self.seconds:.1f}s, {len(self.acknowledged)} acknowledged, "
                f"{sum(self.attempts)} attempts ({self.retries} retries, max {max(self.attempts, default=0)} "
                f"for one delivery); answers {{{codes}}}")


def _attempt(session: requests.Session, url: str, callback: Callback, timeout) -> object:
    try:
        response = session.request(callback.method, url + callback.path, data=callback.body or None,
                                   headers=callback.headers, timeout=timeout)
        response.close()
        return response.status_code
    except requests.RequestException:
        return "no answer"


def send(urls: str | list[str], deliveries: list[Callback], *, threads: int = 4, deadline: float = 60.0,
         timeout: tuple[float, float] = (2.0, 10.0), backoff: float = 0.05, max_backoff: float = 0.5,
         report: Report | None = None) -> Report:
    """Deliver each callback in order from `threads` threads (delivery i goes to urls[i % len(urls)]).

    A delivery that got no answer or a 5xx is retried, with backoff and jitter, until a 2xx or a 4xx,
    or until `deadline` seconds after the start; then its last answer stays in `final`.
    Pass a `report` to watch `report.done` from another thread while this runs.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    report = report or Report(len(deliveries))
    report.attempts = [0] * len(deliveries)
    report.final = [None] * len(deliveries)
    lock = threading.Lock()
    next_index = iter(range(len(deliveries)))
    started = time.monotonic()
    stop_at = started + deadline

    def run() -> None:
        rng = random.Random()
        with requests.Session() as session:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                url, callback = urls[i % len(urls)], deliveries[i]
                while True:
                    sent = time.monotonic()
                    code = _attempt(session, url, callback, timeout)
                    answered = time.monotonic()
                    with lock:
                        report.attempts[i] += 1
                        report.answers[code] += 1
                        report.timeline.append((sent, answered, code))
                        report.final[i] = code
                    retry = code == "no answer" or code >= 500
                    if not retry or answered >= stop_at:
                        break
                    delay = min(max_backoff, backoff * 2 ** min(report.attempts[i] - 1, 10))
                    time.sleep(min(delay * rng.uniform(0.5, 1.0), max(0.0, stop_at - answered)))
                with lock:
                    report.done += 1

    workers = [threading.Thread(target=run, name=f"load-{n}", daemon=True) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        # Every attempt is bounded by `timeout`, so the threads finish shortly after the deadline.
        t.join(timeout=deadline + sum(timeout) + 5)
    report.seconds = time.monotonic() - started
    return report
