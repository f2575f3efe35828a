"""Guessing is slow: after too many wrong operator tokens within a window, from one client address or from
all of them, the operator's doors (console login, /api, /metrics) answer 429 until the window passes,
the right token included.

In memory, per process, bounded and O(1) a request. The address is request.remote_addr, which is
X-Forwarded-For's only behind PROXY_FIX_HOPS trusted proxies; IPv6 addresses count by /64, what one
customer is usually given. Never consulted for /webhooks: those are signed, and must never wait.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict

from flask import current_app, request
from prometheus_client import Counter

log = logging.getLogger("receiver.operator")

WINDOW_SECONDS = 60.0
PER_ADDRESS = 10  # wrong tokens from one address within a window
# From everywhere: a per-address limit alone lets a botnet guess at 10/min per machine. Higher than
# PER_ADDRESS, so that one client cannot lock the operator out on its own.
OVERALL = 100
MAX_ADDRESSES = 10_000  # windows kept at once; an address beyond them is held by the overall limit only
EVERYONE = "*"

AUTH_FAILURES = Counter("vonage_operator_auth_failures_total", "Wrong operator tokens, by door (login, api, metrics)",
                        ["door"])
THROTTLED = Counter("vonage_operator_throttled_total",
                    "Operator requests answered 429 after too many wrong tokens, by door", ["door"])


class _Window:
    __slots__ = ("start", "failures")

    def __init__(self, start: float):
        self.start, self.failures = start, 0


class Throttle:
    """Counts wrong tokens per address and overall in fixed windows that start at a window's first failure."""

    def __init__(self, *, per_address: int = PER_ADDRESS, overall: int = OVERALL, window: float = WINDOW_SECONDS,
                 max_addresses: int = MAX_ADDRESSES, clock=time.monotonic):
        self.per_address, self.overall, self.window, self.max_addresses = per_address, overall, window, max_addresses
        self.clock = clock
        self._lock = threading.Lock()
        # Oldest window first (a window is re-inserted when it starts again): expiry pops from the front.
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._everyone: _Window | None = None

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after(self, address: str | None) -> int | None:
        """Seconds until this client may try again, or None when it may now."""
        now = self.clock()
        with self._lock:
            waits = [self._wait(self._everyone, self.overall, now),
                     self._wait(self._windows.get(client_key(address)), self.per_address, now)]
        waits = [wait for wait in waits if wait is not None]
        return max(waits) if waits else None

    def failed(self, address: str | None, door: str) -> None:
        """Count one wrong token from this client at this door (login, api, metrics)."""
        now, key = self.clock(), client_key(address)
        AUTH_FAILURES.labels(door).inc()
        with self._lock:
            self._expire(now)
            self._everyone = self._count(self._everyone, now, self.overall, EVERYONE)
            current = self._windows.get(key)
            if current is None and len(self._windows) >= self.max_addresses:
                return
            counted = self._count(current, now, self.per_address, key)
            if counted is not current:
                self._windows.pop(key, None)
                self._windows[key] = counted

    def _count(self, window: _Window | None, now: float, limit: int, who: str) -> _Window:
        if window is None or now - window.start >= self.window:
            window = _Window(now)
        window.failures += 1
        if window.failures == limit:  # once a window, however long the guessing goes on
            whom = "all clients" if who == EVERYONE else who
            log.warning("%d wrong operator tokens from %s within %g s: the console login, /api and /metrics "
                        "answer 429 for %d s", limit, whom, self.window, math.ceil(window.start + self.window - now))
        return window

    def _wait(self, window: _Window | None, limit: int, now: float) -> int | None:
        if window is None or window.failures < limit or now - window.start >= self.window:
            return None
        return max(1, math.ceil(window.start + self.window - now))

    def _expire(self, now: float) -> None:
        while self._windows:
            key, oldest = next(iter(self._windows.items()))
            if now - oldest.start < self.window:
                break
            del self._windows[key]


def client_key(address: str | None) -> str:
    """The address a limit counts by: the address itself, an IPv6 one's /64."""
    try:
        parsed = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False))


# -- at the doors ----------------------------------------------------------------------------------
def wait_for(door: str) -> int | None:
    """Before a door compares a token: the seconds this request's client must wait (the 429's
    Retry-After, counted), or None."""
    wait = current_app.extensions["throttle"].retry_after(request.remote_addr)
    if wait is not None:
        THROTTLED.labels(door).inc()
    return wait


def wrong_token(door: str) -> None:
    """A door refused the token this request's client sent."""
    current_app.extensions["throttle"].failed(request.remote_addr, door)


def message(wait: int) -> str:
    return f"too many wrong tokens from here or everywhere: try again in {wait} s"
