"""The serving loop's connections: where each is in its phases, their deadlines, which to give up, and
how one ends (the linger after our answer, the close). Every socket call here is non-blocking.

    reading   the loop reads what has arrived until the request is whole in memory
              (receiver.platform.framing): KEEPALIVE seconds to begin, REQUEST_SECONDS to finish;
    running   a thread parses it with gunicorn's own parser and runs the app into memory;
    writing   the loop sends the answer as the peer's window allows (WRITE_SECONDS in all);
    lingering after our FIN, the loop reads and drops what the peer still sends, so that it reads our
              answer rather than a reset (LINGER_SECONDS, at most MAX_LINGERING at once).

Then a kept-alive connection is reading again (a pipelined request already read is served from memory
first), and any other is closed at once.
Each timed phase has one timeout, so its deadlines are in insertion order: a sweep reads only the front.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import resource
import selectors
import socket
import time

from receiver.platform.framing import IncompleteRequest

FILES_KEPT = 128  # file descriptors left for the database, logs and pipes when sizing the connection limit
LINGER_SECONDS = 2.0  # after our FIN, for the peer's (what gunicorn's graceful close waits, off the loop)
MAX_LINGERING = 128  # closing connections kept lingering at once; past it the oldest is closed now
LINGER_DRAIN_BYTES = 256 * 1024  # what a lingering peer may still send before it is cut off
READ_SIZE = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
FREE_BYTES = 64 * 1024  # what any request may hold in memory while it arrives (a callback is smaller)
BUFFER_BUDGET = 64 * 1024 * 1024  # what all requests of a process may hold past their FREE_BYTES


class Connection:
    """One client socket and where it is in its phases."""

    READING, RUNNING, WRITING, LINGERING = "reading", "running", "writing", "lingering"

    __slots__ = ("sock", "client", "server", "phase", "deadline", "incoming", "held", "out", "keep", "linger",
                 "continued", "drained", "events", "heard_at")

    def __init__(self, sock: socket.socket, client, server):
        self.sock, self.client, self.server = sock, client, server
        self.phase = Connection.READING
        self.deadline = 0.0
        self.incoming: IncompleteRequest | None = None
        self.held = 0  # bytes of `incoming` counted against the buffer budget
        self.out = memoryview(b"")
        self.keep = False
        self.linger = True  # after the last answer, wait for the peer's FIN (False: a connection given up)
        self.continued = False
        self.heard_at = time.monotonic()  # when it last sent anything (or was accepted, or kept alive)
        self.drained = 0
        self.events = 0  # what the loop's selector watches for on this socket

    @property
    def address(self) -> str:
        return self.client[0] if isinstance(self.client, tuple) else "-"


class Phases:
    """Every connection of one process, in exactly one of its sets, and the selector that watches them."""

    def __init__(self, poller: selectors.BaseSelector):
        self.poller = poller
        self.fresh: dict[Connection, None] = {}  # accepted, nothing sent yet
        self.kept: dict[Connection, None] = {}  # kept alive after an answer, waiting for the next request
        self.arriving: dict[Connection, None] = {}  # a request begun
        self.writing: dict[Connection, None] = {}
        self.lingering: dict[Connection, None] = {}
        self.running: set[Connection] = set()
        # Every connection waiting for (the rest of) a request, the one that has been quiet longest first.
        self.quiet: dict[Connection, None] = {}
        self.buffered = 0  # request bytes held in memory past each connection's first FREE_BYTES

    def hold(self, conn: Connection, size: int | None = None) -> None:
        """Count what `conn` holds in memory now: `size` bytes (a request a thread runs, with what was
        pipelined behind it), else what conn.incoming holds (call after each change to it)."""
        if size is None:
            size = len(conn.incoming.data) if conn.incoming is not None else 0
        held = max(0, size - FREE_BYTES)
        self.buffered += held - conn.held
        conn.held = held

    def over_budget(self, conn: Connection) -> bool:
        """A large request arriving while the process holds too much: refused, so memory stays bounded."""
        return bool(conn.held) and self.buffered > BUFFER_BUDGET

    def timed(self) -> tuple[dict, ...]:
        return self.fresh, self.kept, self.arriving, self.writing, self.lingering

    def __iter__(self):
        for phase in self.timed():
            yield from list(phase)
        yield from list(self.running)

    def __len__(self) -> int:
        return sum(len(phase) for phase in self.timed()) + len(self.running)

    def busy(self, stopping: bool = False) -> bool:
        """A request is arriving, running or being answered (or, `stopping`, may be on its way)."""
        return bool(self.arriving or self.running or self.writing or (stopping and (self.fresh or self.kept)))

    def enter(self, conn: Connection, phase: dict | set | None, seconds: float = 0.0) -> None:
        """Move `conn` to `phase` (None: forget it), its deadline `seconds` from now."""
        for held in self.timed():
            held.pop(conn, None)
        self.running.discard(conn)
        if phase is self.fresh or phase is self.kept or (phase is self.arriving and conn not in self.quiet):
            self.heard(conn)
        elif phase is not self.arriving:
            self.quiet.pop(conn, None)
        if phase is self.running:
            self.running.add(conn)
        elif phase is not None:
            conn.deadline = time.monotonic() + seconds
            phase[conn] = None

    def heard(self, conn: Connection) -> None:
        """`conn` sent something (or starts waiting): it is the last of the quiet ones now."""
        self.quiet.pop(conn, None)
        self.quiet[conn] = None
        conn.heard_at = time.monotonic()

    def expired(self, now: float):
        """(phase, connection) for each deadline that has passed, front first; the caller moves each on."""
        for phase in self.timed():
            while phase:
                conn = next(iter(phase))
                if conn.deadline > now:
                    break
                yield phase, conn
                if conn in phase:  # not moved on: never looked at twice
                    phase.pop(conn)

    def watch(self, conn: Connection, events: int) -> None:
        """Have the loop's selector watch `conn` for `events` (0: not at all)."""
        if events == conn.events:
            return
        try:
            if not events:
                self.poller.unregister(conn.sock)
            elif not conn.events:
                self.poller.register(conn.sock, events, conn)
            else:
                self.poller.modify(conn.sock, events, conn)
        except (KeyError, ValueError, OSError):
            pass
        conn.events = events

    def receive(self, conn: Connection) -> bytes:
        """What has arrived on `conn` (b"" when nothing has yet); at the peer's close or reset, `conn` is
        closed and b"" returned: a request not whole by then has nobody to answer."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self.close(conn)
        else:
            self.heard(conn)
        return data

    def say_continue(self, conn: Connection) -> bool:
        """Answer `Expect: 100-continue`; False (and `conn` closed) when it could not all go at once, which
        it always can into an empty send buffer."""
        try:
            conn.continued = conn.sock.send(CONTINUE) == len(CONTINUE)
        except OSError:
            conn.continued = False
        if not conn.continued:
            self.close(conn)
        return conn.continued

    def send_some(self, conn: Connection) -> bool:
        """Send what the kernel takes of `conn.out`; True once all of it is gone (False: the rest goes when
        the peer's window opens, or the peer is gone and `conn` closed)."""
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close(conn)
            return False
        conn.out = conn.out[sent:]
        if conn.out:
            self.watch(conn, selectors.EVENT_WRITE)
            return False
        return True

    def forget_request(self, conn: Connection) -> None:
        conn.incoming = None
        self.hold(conn)

    def linger(self, conn: Connection) -> None:
        """After a last answer: our FIN, then read and drop what the peer still sends, for a while (a
        connection given up to make room is closed at once)."""
        if not conn.linger:
            self.close(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # the FIN follows the answer; this does not wait
        except OSError:
            self.close(conn)
            return
        conn.phase, conn.drained = Connection.LINGERING, 0
        self.forget_request(conn)
        self.enter(conn, self.lingering, LINGER_SECONDS)
        self.watch(conn, selectors.EVENT_READ)
        if len(self.lingering) > MAX_LINGERING:
            self.close(next(iter(self.lingering)))

    def drain(self, conn: Connection) -> None:
        """A lingering peer sent something (or closed): drop it; close at its end, or past LINGER_DRAIN_BYTES."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > LINGER_DRAIN_BYTES:
            self.close(conn)

    def close(self, conn: Connection) -> None:
        self.watch(conn, 0)
        self.forget_request(conn)
        self.enter(conn, None)
        with contextlib.suppress(OSError):
            conn.sock.close()  # no SO_LINGER: returns at once, whatever the peer does

    def cheapest(self, spare: Connection | None) -> Connection | None:
        """The connection that costs least to lose: one lingering (answered already), else the one that has
        been quiet longest among those waiting for a request, whatever it sent before; never `spare`, and
        not a kept-alive one whose next request is already in the kernel's buffer. No fixed order of
        phases: a peer can game any (silent sockets, or one byte each), not being quieter than the rest."""
        if self.lingering:
            return next(iter(self.lingering))
        for conn in list(itertools.islice(self.quiet, 64)):
            if conn is spare:
                continue
            if conn in self.kept and self.waiting(conn):
                self.heard(conn)  # it has spoken: read it, don't drop it
                continue
            return conn
        return None

    @staticmethod
    def waiting(conn: Connection) -> bool:
        """Bytes from the peer are in the kernel's buffer, not read yet (closing now would reset them)."""
        try:
            return bool(conn.sock.recv(1, socket.MSG_PEEK))
        except OSError:
            return False


class OutOfFiles(Exception):
    """accept() found no file descriptor, or no memory, for another connection."""


def accepted(listener: socket.socket, most: int):
    """The connections waiting on `listener`, up to `most`, non-blocking.

    :raises OutOfFiles: when the process or the system is out of file descriptors (or buffers).
    """
    for _ in range(most):
        try:
            sock, client = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise OutOfFiles() from None
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO):  # gone before it was taken
                continue
            raise
        sock.setblocking(False)
        yield Connection(sock, client, listener.getsockname())


def connections_the_files_allow(wanted: int) -> int:
    """The connection limit this process's file descriptors allow, raising the soft limit toward the hard
    one first: a limit past the descriptors would fail in accept() rather than in a chosen eviction."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FILES_KEPT
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a limit we may not raise: the connection limit fits the one we have
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FILES_KEPT))
