"""Delivering the outbox: one sender thread beside each worker loop, never inside a transaction.

It claims due messages (durably, so a row is on disk before its request leaves), sends each once
through the Messages API within the rate limit, and records the answer durably:
- 202: `sent`, with its message_uuid; never sent again.
- 429 (after its Retry-After, at most SEND_MAX_RETRY_AFTER_SECONDS), 5xx, or a request that never left:
  `queued` again, with backoff.
- any other 4xx: `failed`, Vonage's problem details kept.
- the request left and no answer came: `unknown`; it waits SEND_UNKNOWN_WAIT_SECONDS for a status
  callback carrying its client_ref (which marks it sent), and is sent again only if none came.
After SEND_MAX_ATTEMPTS, a message that could not be sent is `failed`.

Each call has a total deadline, SEND_TIMEOUT_SECONDS (receiver.sending.deadline), and a batch's messages go
out side by side, SEND_CONCURRENCY at a time, each on its own connection: a peer that trickles its answer
holds one of them for that deadline at most, never the messages beside or behind it for longer.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from receiver.platform.config import ConfigError
from receiver.sending.bodies import CHANNELS
from receiver.sending.client import SANDBOX_BASE, MessagesClient, SendError
from receiver.sending.keys import load_private_key

log = logging.getLogger("receiver.sending")

RATE_REFRESH_SECONDS = 10.0
RETRY_SECONDS = (5.0, 900.0)  # the first wait after a failed attempt, doubling up to the second


def client_settings(config: dict) -> dict | None:
    """The MessagesClient arguments the settings describe, or None when sending is not configured.

    :raises ConfigError: a private key that does not load, or one without VONAGE_APPLICATION_ID.
    """
    base = SANDBOX_BASE if config.get("VONAGE_MESSAGES_SANDBOX") else config["VONAGE_API_BASE"]
    if config.get("VONAGE_PRIVATE_KEY") or config.get("VONAGE_PRIVATE_KEY_PATH"):
        try:
            key = load_private_key(config.get("VONAGE_PRIVATE_KEY"), config.get("VONAGE_PRIVATE_KEY_PATH"))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not config.get("VONAGE_APPLICATION_ID"):
            raise ConfigError("VONAGE_PRIVATE_KEY is set without VONAGE_APPLICATION_ID: set the id of the "
                              "application the key belongs to")
        return {"application_id": config["VONAGE_APPLICATION_ID"], "private_key": key, "api_base": base}
    if config.get("VONAGE_API_KEY") and config.get("VONAGE_API_SECRET"):
        return {"api_key": config["VONAGE_API_KEY"], "api_secret": config["VONAGE_API_SECRET"], "api_base": base}
    return None


NOT_CONFIGURED = ("sending is not configured: set VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY (or "
                  "VONAGE_PRIVATE_KEY_PATH), or VONAGE_API_KEY and VONAGE_API_SECRET")


class Sender:
    """Sends what the outbox holds; `run_once()` one batch, receiver.worker.supervisor loops it."""

    def __init__(self, storage, config: dict, name: str, **client_options):
        self.storage = storage
        self.config = config
        self.name = name
        self._settings = client_settings(config)
        self._client_options = {"total_timeout": config["SEND_TIMEOUT_SECONDS"], **client_options}
        self._clients: queue.SimpleQueue[MessagesClient] = queue.SimpleQueue()  # idle ones, one per call at a time
        self._pool: ThreadPoolExecutor | None = None
        self.concurrency = config["SEND_CONCURRENCY"]
        self._tokens, self._rate, self._refilled = 1.0, float(config["SEND_RATE"]), time.monotonic()
        self._rate_checked = 0.0
        self._wake = threading.Event()
        self.sent = 0

    def notify(self) -> None:
        self._wake.set()

    def wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Claim one batch of due messages (SEND_CONCURRENCY of them) and send them side by side; how many
        were tried. Returns when each has its answer or its deadline passed."""
        # Leased for as long as the batch can take: every call's deadline, and the wait for the rate.
        lease = self.config["SEND_TIMEOUT_SECONDS"] + self.concurrency / max(self._rate, 0.001) + 30.0
        rows = self.storage.outbox.claim(self.name, self.concurrency, self.config["SEND_UNKNOWN_WAIT_SECONDS"],
                                         lease)
        if self._pool is None and rows:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"{self.name}-send")
        calls, tried = [], len(rows)
        for i, row in enumerate(rows):
            if stop is not None and stop.is_set():
                for rest in rows[i:]:  # unsent: queued again at once, the attempt uncounted
                    self.storage.outbox.record(rest.id, self.name, state="queued", attempts=rest.attempts - 1,
                                             available_at=time.time())
                tried = i
                break
            self._take_token()
            calls.append(self._pool.submit(self._send, row))
        for call in calls:
            call.result()  # a database failure recording an answer is raised here
        return tried

    def _client(self) -> MessagesClient:
        try:
            return self._clients.get_nowait()
        except queue.Empty:
            return MessagesClient(**self._settings, **self._client_options)

    def _send(self, row) -> None:
        body = json.loads(row.request)
        client = self._client()
        try:
            result = client.send_message(body)
        except SendError as exc:
            self._record_failure(row, exc)
            return
        finally:
            self._clients.put(client)  # requests.Session is not thread-safe: one call at a time each
        self.storage.outbox.record(row.id, self.name, state="sent", message_uuid=result.message_uuid,
                                 sent_at=time.time(), last_error=None, problem=None)
        self.sent += 1
        log.info("outbox %s sent as %s (%s to %s)", row.id, result.message_uuid, row.channel, row.to_number)

    def _record_failure(self, row, exc: SendError) -> None:
        now, problem = time.time(), json.dumps(exc.problem) if exc.problem else None
        if exc.kind == "permanent":
            state, at = "failed", now
        elif row.attempts >= self.config["SEND_MAX_ATTEMPTS"]:
            state, at = "failed", now
        elif exc.kind == "unknown":
            state, at = "unknown", now + self.config["SEND_UNKNOWN_WAIT_SECONDS"]
        else:
            wait = min(RETRY_SECONDS[1], RETRY_SECONDS[0] * 2 ** (row.attempts - 1))
            if exc.retry_after is not None:
                wait = retry_wait(exc.retry_after, self.config["SEND_MAX_RETRY_AFTER_SECONDS"])
            state, at = "queued", now + wait
        self.storage.outbox.record(row.id, self.name, state=state, available_at=at, last_error=str(exc), problem=problem)
        log.warning("outbox %s (attempt %d): %s; now %s", row.id, row.attempts, exc, state)

    def _take_token(self) -> None:
        """Wait for this process's share of SEND_RATE: the rate divided among the live workers."""
        now = time.monotonic()
        if now - self._rate_checked >= RATE_REFRESH_SECONDS:
            self._rate_checked = now
            try:
                self._rate = float(self.config["SEND_RATE"]) / max(1, self.storage.stats.live_workers())
            except Exception:
                pass  # keep the last share
        self._tokens = min(1.0, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1.0:
            time.sleep((1.0 - self._tokens) / self._rate)
            self._refilled, self._tokens = time.monotonic(), 1.0
        self._tokens -= 1.0


def retry_wait(retry_after: float, cap: float) -> float:
    """The seconds a Retry-After makes a message wait: at most `cap` (and never past a day), never negative;
    anything not a number is the cap."""
    cap = min(cap, 86400.0)
    return min(max(0.0, retry_after), cap) if math.isfinite(retry_after) else cap


# name -> (lowest, highest): a value outside is a start error, not a message parked forever or never waited for.
LIMITS = {"SEND_TIMEOUT_SECONDS": (0.1, 300.0), "SEND_CONCURRENCY": (1, 64),
          "SEND_MAX_RETRY_AFTER_SECONDS": (0.0, 86400.0)}


def check_limits(config) -> None:
    """:raises ConfigError: a sending setting that is not a finite number within its bounds."""
    for name, (low, high) in LIMITS.items():
        value = config[name]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
            raise ConfigError(f"{name}={value!r}: expected a number from {low:g} to {high:g}")


def silent_deadlines(config) -> dict[str, float]:
    """Per channel, the seconds after which a sent message with no final status is `silent` (SILENT_AFTER_SECONDS_*)."""
    return {channel: float(config[f"SILENT_AFTER_SECONDS_{channel.upper()}"]) for channel in CHANNELS}


def init_app(app: Flask) -> None:
    """Check the sending settings at start (a key that does not load is a start error, not a failed send)."""
    check_limits(app.config)
    settings = client_settings(app.config)
    app.extensions["sending_configured"] = settings is not None
