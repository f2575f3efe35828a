"""A total deadline over one HTTP call: connect, TLS handshake, request, headers and the whole body.

requests' read timeout applies to each `recv`: a peer that sends one byte every few seconds holds a call
for as long as it likes. Here, every socket a call opens or reuses is watched, and when the deadline
passes a timer shuts the socket down, which ends whatever `recv` or `send` is blocked on it at once.
Only requests and urllib3 are touched; nothing here knows Vonage.
"""
from __future__ import annotations

import socket
import threading
import time

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()  # the Deadline of the call this thread is making, if any


class Deadline:
    """One call's deadline: `with Deadline(seconds) as d:` around the call; `d.expired` says it fired, and
    `d.connected` whether a connection was made first (if not, nothing was sent)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self.connected = False
        self._watched: list[socket.socket] = []
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def __enter__(self) -> Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        _current.deadline = None
        with self._lock:
            self._done = True
            self._timer.cancel()
            for watched in self._watched:
                watched.close()
            self._watched.clear()

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down if the deadline passes before the call ends. A duplicate of its file descriptor is
        kept, closed by this call alone: the timer can never shut down a socket that reused the number."""
        with self._lock:
            if self._done:
                return
            try:
                watched = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except (OSError, ValueError):  # already closed
                return
            self._watched.append(watched)
            if self.expired:
                _shut(watched)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for watched in self._watched:
                _shut(watched)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _deadline() -> Deadline | None:
    return getattr(_current, "deadline", None)


class _Watched:
    """A urllib3 connection whose sockets the current thread's Deadline watches."""

    def _new_conn(self):
        sock = super()._new_conn()
        if (deadline := _deadline()) is not None:
            deadline.watch(sock)  # before the TLS handshake: a dribbled handshake is covered too
        return sock

    def connect(self) -> None:
        super().connect()
        if (deadline := _deadline()) is not None:
            deadline.connected = True

    def request(self, *args, **kwargs):
        deadline = _deadline()
        if deadline is not None and self.sock is not None:  # a kept-alive connection, reused
            deadline.watch(self.sock)
            deadline.connected = True
        return super().request(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections a Deadline can cut; no retries of its own (a resent POST sends twice)."""

    def __init__(self):
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
