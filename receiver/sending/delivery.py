"""Delivering the outbox: one sender thread beside each worker loop, never inside a transaction.

It claims due messages (durably, so a row is on disk before its request leaves), sends each once
through the Messages API within the rate limit, and records the answer durably:
- 202: `sent`, with its message_uuid; never sent again.
- 429 (after its Retry-After), 5xx, or a request that never left: `queued` again, with backoff.
- any other 4xx: `failed`, Vonage's problem details kept.
- the request left and no answer came: `unknown`; it waits SEND_UNKNOWN_WAIT_SECONDS for a status
  callback carrying its client_ref (which marks it sent), and is sent again only if none came.
After SEND_MAX_ATTEMPTS, a message that could not be sent is `failed`.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from flask import Flask

from receiver.platform.config import ConfigError
from receiver.sending.client import SANDBOX_BASE, MessagesClient, SendError
from receiver.sending.keys import load_private_key

log = logging.getLogger("receiver.sending")

CLAIM_MAX = 20
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
        settings = client_settings(config)
        self.client = None if settings is None else MessagesClient(**settings, **client_options)
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
        """Claim and send one batch of due messages; how many were tried."""
        rows = self.storage.outbox.claim(self.name, CLAIM_MAX, self.config["SEND_UNKNOWN_WAIT_SECONDS"])
        for i, row in enumerate(rows):
            if stop is not None and stop.is_set():
                for rest in rows[i:]:  # unsent: queued again at once, the attempt uncounted
                    self.storage.outbox.record(rest.id, self.name, state="queued", attempts=rest.attempts - 1,
                                             available_at=time.time())
                return i
            self._take_token()
            self._send(row)
        return len(rows)

    def _send(self, row) -> None:
        body = json.loads(row.request)
        try:
            result = self.client.send_message(body)
        except SendError as exc:
            self._record_failure(row, exc)
            return
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
            wait = exc.retry_after if exc.retry_after is not None else min(
                RETRY_SECONDS[1], RETRY_SECONDS[0] * 2 ** (row.attempts - 1))
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


def init_app(app: Flask) -> None:
    """Check the sending settings at start (a key that does not load is a start error, not a failed send)."""
    settings = client_settings(app.config)
    app.extensions["sending_configured"] = settings is not None
