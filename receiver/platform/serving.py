"""The web server's worker: one non-blocking loop does every socket operation; threads only run the app.

Vonage queues callbacks per account, so nothing a peer does may hold up the answer to a signed
callback. gunicorn's threaded worker (gthread) lets peers hold it up: a thread blocks reading a
request that has not arrived, or writing an answer nobody reads, and its main loop blocks in the
graceful close of every connection that is not kept alive (`util.close_graceful` waits up to 2 s in
`recv` for the peer's FIN), so twenty peers that send `Connection: close` and linger stop every
acknowledgement. Here a connection moves through four phases, each with its deadline:

    reading   the loop reads what has arrived, without blocking, until the request is whole in
              memory (receiver.platform.framing; KEEPALIVE seconds to begin, REQUEST_SECONDS to finish);
    running   a thread of `Lanes` parses those bytes with gunicorn's own parser and runs the app,
              writing the answer to memory, never to the socket;
    writing   the loop sends the answer as the peer's window allows (WRITE_SECONDS in all);
    lingering after our FIN, the loop reads and drops what the peer still sends, so that it reads
              our answer rather than a reset (LINGER_SECONDS, at most MAX_LINGERING at once).

Then a kept-alive connection is reading again (a pipelined request already read is served from
memory first), and any other is closed at once: a close never waits for the peer. Webhook requests
go to the threads first, and other requests (pages, /metrics, 404s) take two threads at most, with a
short queue (past it they are answered 503 by the loop): a flood of them waits behind callbacks.

What this class takes from gunicorn, and where it runs. It subclasses `base.Worker`, not gthread:
nothing of gthread's connection handling (`accept`, `handle`, `finish_request`, keep-alive,
`murder_keepalived`/`murder_pending`, its `close_graceful`) is inherited. From `base.Worker` it keeps
process setup, signals (their wakeup pipe is one of the loop's sockets, so SIGTERM is seen at once)
and `notify()` (a utime on a file; the loop calls it every second, so a busy or attacked worker is
never mistaken for a hung one). On the loop: `accept` (non-blocking, many at a time; past the
connection limit, or out of file descriptors, the connection that costs least to lose is closed),
the reads and writes above (non-blocking `recv`/`send`, each taking what the kernel has), `shutdown`
and `close` (neither waits for the peer), and the refusals decided from the bytes alone (408, 413,
431, 400 for a body cut into too many chunks, 503 for too much buffered or too many connections):
JSON answers queued like any other. A fault in handling one connection closes that connection only.
In a thread: gunicorn's `RequestParser` over the bytes in memory, its `wsgi.create` and `Response`
writing into a buffer, the access log, and `handle_error` (gunicorn's own 400/414/431/501 ... as
JSON in the app's shape, into the same buffer). A request whose bytes the parser reads differently
from the loop (some left over, or more wanted) ends its connection after the answer, so no request
is smuggled behind another. TLS is not served here: terminate it in front (nginx, the platform's
router). `gunicorn.conf.py` selects this class.
"""
from __future__ import annotations

import errno
import logging
import os
import resource
import selectors
import socket
import sys
import threading
import time
from collections import deque
from datetime import datetime

from gunicorn import http
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi
from gunicorn.workers import base
from gunicorn.workers.gthread import PollableMethodQueue

from receiver.platform import config
from receiver.platform.framing import IncompleteRequest, json_answer, status_of
from receiver.platform.logs import Tally

log = logging.getLogger("gunicorn.error")
# A flood of requests refused for one reason is one log line every few seconds, not one a request.
refusals = Tally(log, "refused %(count)d request(s) from %(sources)s: %(what)s")

REQUEST_SECONDS = 10.0  # from a request's first byte to its last (Vonage sends a callback at once)
WRITE_SECONDS = 10.0  # from an answer being ready to its last byte taken by the kernel
LINGER_SECONDS = 2.0  # after our FIN, for the peer's (what gunicorn's graceful close waits, off the loop)
MAX_LINGERING = 128  # closing connections kept lingering at once; past it the oldest is closed now
LINGER_DRAIN_BYTES = 256 * 1024  # what a lingering peer may still send before it is cut off
READ_SIZE = 64 * 1024
PARSE_PIECE = 8 * 1024  # what gunicorn's parser is handed at a time (it copies what is left per chunk)
FREE_BYTES = 64 * 1024  # what any request may hold in memory while it arrives (a callback is smaller)
BUFFER_BUDGET = 64 * 1024 * 1024  # what all requests of a process may hold past their FREE_BYTES
FILES_KEPT = 128  # file descriptors left for the database, logs and pipes when sizing the connection limit
OTHERS_AT_ONCE = 2  # threads other requests (pages, the API, probes, 404s) may take at once
OTHERS_QUEUED = 4  # other requests waiting per thread they may take; past that, answered 503 at once
SWEEP_SECONDS = 0.1  # how often deadlines are looked at
NOTIFY_SECONDS = 1.0
ACCEPT_AT_ONCE = 64
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

READING, RUNNING, WRITING, LINGERING = "reading", "running", "writing", "lingering"


class Lanes:
    """The threads that run the app: webhooks first; other requests take OTHERS_AT_ONCE of them at most, so
    a flood of them leaves the rest to callbacks and competes for the interpreter with few threads."""

    def __init__(self, threads: int):
        self.max_others = max(1, min(OTHERS_AT_ONCE, threads - 1))
        self._ready = threading.Condition()
        self._urgent: deque = deque()
        self._others: deque = deque()
        self._others_running = 0
        self._stopped = False
        for n in range(threads):
            threading.Thread(target=self._run, name=f"request-{n}", daemon=True).start()

    def full(self) -> bool:
        """Enough other requests are waiting already (a flood of them must not pile up)."""
        return len(self._others) >= self.max_others * OTHERS_QUEUED

    def submit(self, urgent: bool, job, done) -> None:
        """Run `job()` in a thread, then `done(result, error)` there."""
        with self._ready:
            (self._urgent if urgent else self._others).append((job, done))
            self._ready.notify()

    def stop(self) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify_all()

    def _take(self):
        with self._ready:
            while not self._stopped:
                if self._urgent:
                    return self._urgent.popleft(), False
                if self._others and self._others_running < self.max_others:
                    self._others_running += 1
                    return self._others.popleft(), True
                self._ready.wait()
            return None, False

    def _run(self) -> None:
        while True:
            task, other = self._take()
            if task is None:
                return
            job, done = task
            result, error = None, None
            try:
                result = job()
            except BaseException as exc:  # noqa: BLE001 (a handler's SystemExit included): an answer, never a hang
                error = exc
            if other:
                with self._ready:
                    self._others_running -= 1
                    self._ready.notify()
            done(result, error)


class _Connection:
    """One client socket and where it is in its phases."""

    __slots__ = ("sock", "client", "server", "phase", "deadline", "incoming", "held", "out", "keep", "continued",
                 "drained", "events")

    def __init__(self, sock: socket.socket, client, server):
        self.sock, self.client, self.server = sock, client, server
        self.phase = READING
        self.deadline = 0.0
        self.incoming: IncompleteRequest | None = None
        self.held = 0  # bytes of `incoming` counted against BUFFER_BUDGET
        self.out = memoryview(b"")
        self.keep = False
        self.continued = False
        self.drained = 0
        self.events = 0  # what the loop's selector watches for on this socket

    @property
    def address(self) -> str:
        return self.client[0] if isinstance(self.client, tuple) else "-"


class _Answer:
    """Stands in for the socket while a thread runs the app: gunicorn's `Response` writes here."""

    def __init__(self):
        self.data = bytearray()

    def sendall(self, data) -> None:
        self.data += data

    def send(self, data) -> int:  # only ever a 100 Continue, which the loop has answered already
        return len(data)


class _Pieces:
    """The request's bytes for gunicorn's parser, a piece at a time; says whether it wanted more."""

    def __init__(self, data: bytes):
        self._pieces = iter([data[i:i + PARSE_PIECE] for i in range(0, len(data), PARSE_PIECE)])
        self.wanted_more = False

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        piece = next(self._pieces, None)
        if piece is None:
            self.wanted_more = True
            raise StopIteration
        return piece

    def left(self) -> bool:
        return next(self._pieces, None) is not None


def parse(cfg, data: bytes, client):
    """(parser, pieces, request): gunicorn's parser reading one request from `data` in memory.

    :raises gunicorn.http.errors.ParseException: and the others gunicorn's parser raises.
    """
    pieces = _Pieces(data)
    parser = http.RequestParser(cfg, pieces, client)
    return parser, pieces, next(parser)


def read_exactly(parser, pieces: _Pieces) -> bool:
    """True when gunicorn's parser read the request's bytes and no more and no fewer (its body drained
    first): only then may the connection serve another request."""
    return parser.finish_body() and not parser.unreader.buf.getvalue() and not pieces.left() \
        and not pieces.wanted_more


class NonBlockingWorker(base.Worker):
    """gunicorn worker whose one loop does every socket operation without blocking; see the module."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = {**config.defaults(), **config.from_env()}
        self.max_body = settings["MAX_CONTENT_LENGTH"]
        self.max_fields = self.cfg.limit_request_fields or 32768
        self.max_connections = self.cfg.worker_connections
        # One ordered set per timed phase: each phase has one timeout, so its deadlines are in
        # insertion order and a sweep only looks at the front.
        self.fresh: dict[_Connection, None] = {}  # accepted, nothing sent yet
        self.kept: dict[_Connection, None] = {}  # kept alive after an answer, waiting for the next request
        self.arriving: dict[_Connection, None] = {}  # a request begun
        self.writing: dict[_Connection, None] = {}
        self.lingering: dict[_Connection, None] = {}
        self.running: set[_Connection] = set()
        self.buffered = 0  # request bytes held in memory past each connection's first FREE_BYTES
        self.accepting = False
        self.out_of_files = False
        self.lanes: Lanes | None = None
        self.poller: selectors.BaseSelector | None = None
        self.method_queue = PollableMethodQueue()

    @classmethod
    def check_config(cls, cfg, log):
        if cfg.is_ssl:
            print("Error: receiver.platform.serving.NonBlockingWorker serves plain HTTP: terminate TLS in front of it "
                  "(nginx, the platform's router) and remove certfile/keyfile", file=sys.stderr, flush=True)
            raise SystemExit(2)

    # -- the loop -----------------------------------------------------------------------------------
    def init_process(self):
        self.max_connections = _connections_the_files_allow(self.max_connections)
        self.lanes = Lanes(self.cfg.threads)
        self.poller = selectors.DefaultSelector()
        self.method_queue.init()
        super().init_process()

    def run(self):
        self.poller.register(self.method_queue.fileno(), selectors.EVENT_READ, self._run_callbacks)
        self.poller.register(self.PIPE[0], selectors.EVENT_READ, self._drain_wakeups)  # signals wake the loop
        self._set_accepting(True)
        notified = swept = 0.0
        stopping_until = None
        while True:
            now = time.monotonic()
            if now - notified >= NOTIFY_SECONDS:
                self.notify()
                notified = now
            if not self.alive and stopping_until is None:
                stopping_until = now + self.cfg.graceful_timeout
                self._begin_stopping()
            if stopping_until is not None and (not self._busy() or now > stopping_until):
                break
            for key, mask in self.poller.select(SWEEP_SECONDS):
                if isinstance(key.data, _Connection):
                    self._guarded(key.data, self._ready, key.data)
                else:
                    try:
                        key.data(key.fileobj, mask)
                    except Exception:  # accepting, signals, answers from threads: the loop goes on
                        log.exception("a fault in the serving loop")
            now = time.monotonic()
            if now - swept >= SWEEP_SECONDS:
                self._sweep(now)
                refusals.flush(now)
                swept = now
            if not self.is_parent_alive():
                break
        for conn in list(self._all()):
            self._close(conn)
        self.lanes.stop()
        self.poller.close()
        self.method_queue.close()
        for listener in self.sockets:
            listener.close()

    def _guarded(self, conn: _Connection, step, *args, **kwargs) -> None:
        """One step of one connection; a fault in it closes that connection, never the loop."""
        try:
            step(*args, **kwargs)
        except Exception:
            log.exception("closing a connection from %s after a fault in serving it", conn.address)
            self._close(conn)

    def handle_quit(self, sig, frame):
        """SIGQUIT, SIGINT: stop now, without waiting for the requests in threads."""
        self.lanes.stop()
        super().handle_quit(sig, frame)

    def is_parent_alive(self) -> bool:
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def _run_callbacks(self, fileobj, mask):
        self.method_queue.run_callbacks(fileobj)

    def _drain_wakeups(self, fileobj, mask):
        try:
            while os.read(self.PIPE[0], 4096):
                pass
        except OSError:
            pass

    def _busy(self) -> bool:
        return bool(self.arriving or self.running or self.writing)

    def _timed(self):
        return self.fresh, self.kept, self.arriving, self.writing, self.lingering

    def _all(self):
        for phase in self._timed():
            yield from phase
        yield from self.running

    def _begin_stopping(self):
        self._set_accepting(False)
        for conn in [*self.fresh, *self.kept]:  # nothing asked of these: close them now
            self._close(conn)

    def _set_accepting(self, enabled: bool) -> None:
        enabled = enabled and self.alive and not self.out_of_files
        if enabled == self.accepting:
            return
        for listener in self.sockets:
            if enabled:
                listener.setblocking(False)
                self.poller.register(listener, selectors.EVENT_READ, self._accept)
            else:
                self.poller.unregister(listener)
        self.accepting = enabled

    def _sweep(self, now: float) -> None:
        """Act on every deadline that has passed: each phase's set is in deadline order."""
        for phase in self._timed():
            while phase:
                conn = next(iter(phase))
                if conn.deadline > now:
                    break
                if phase is self.arriving:
                    self._guarded(conn, self._refuse, conn, 408, "request_timeout",
                                  f"the request did not arrive within {REQUEST_SECONDS:g} s")
                else:  # idle, an answer not taken in time, or a linger that is over
                    self._close(conn)

    def _enter(self, conn: _Connection, phase: dict | set | None, seconds: float = 0.0) -> None:
        for held in self._timed():
            held.pop(conn, None)
        self.running.discard(conn)
        if phase is self.running:
            self.running.add(conn)
        elif phase is not None:
            conn.deadline = time.monotonic() + seconds
            phase[conn] = None

    def _watch(self, conn: _Connection, events: int) -> None:
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

    # -- accepting ----------------------------------------------------------------------------------
    def _accept(self, listener, mask):
        for _ in range(ACCEPT_AT_ONCE):
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._make_room(out_of_files=True)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            sock.setblocking(False)
            conn = _Connection(sock, client, listener.getsockname())
            self._await_request(conn, self.cfg.keepalive or REQUEST_SECONDS)
            if self._count() > self.max_connections:
                self._make_room(spare=conn)

    def _count(self) -> int:
        return sum(len(phase) for phase in self._timed()) + len(self.running)

    def _make_room(self, out_of_files: bool = False, spare: _Connection | None = None) -> None:
        """Close the connection that costs least to lose: one lingering, one kept alive, the request that
        has taken longest to arrive (answered 503), else the oldest that has sent nothing; never `spare`,
        just accepted. Without any, stop accepting until one closes."""
        for phase in (self.lingering, self.kept, self.arriving, self.fresh):
            conn = next((c for c in phase if c is not spare), None) if phase else None
            if conn is None:
                continue
            if phase is self.arriving:
                self._refuse(conn, 503, "busy", "too many connections; retry later")
            else:
                self._close(conn)
            return
        if out_of_files:
            self.out_of_files = True
            self._set_accepting(False)

    # -- reading ------------------------------------------------------------------------------------
    def _await_request(self, conn: _Connection, idle_seconds: float, data: bytes = b"", *, kept=False) -> None:
        conn.phase, conn.continued = READING, False
        conn.incoming = IncompleteRequest(self.max_body, self.max_fields, data)
        self._account(conn)
        if data:
            self._enter(conn, self.arriving, REQUEST_SECONDS)
            self._progress(conn, conn.incoming.feed())
        else:
            self._enter(conn, self.kept if kept else self.fresh, idle_seconds)
            self._watch(conn, selectors.EVENT_READ)

    def _ready(self, conn: _Connection) -> None:
        if conn.phase == READING:
            self._read(conn)
        elif conn.phase == WRITING:
            self._write(conn)
        elif conn.phase == LINGERING:
            self._drain(conn)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:  # the peer closed, or half-closed before its request was whole: nothing to answer
            self._close(conn)
            return
        if conn not in self.arriving:  # the request has begun: it has REQUEST_SECONDS to arrive whole
            self._enter(conn, self.arriving, REQUEST_SECONDS)
        done = conn.incoming.feed(data)
        self._account(conn)
        if done is False and conn.held and self.buffered > BUFFER_BUDGET:
            done = 503, "busy", "too many large requests at once; retry later"
        self._progress(conn, done)

    def _account(self, conn: _Connection) -> None:
        """Keep `buffered` equal to what arriving requests hold past their first FREE_BYTES."""
        held = max(0, len(conn.incoming.data) - FREE_BYTES) if conn.incoming is not None else 0
        self.buffered += held - conn.held
        conn.held = held

    def _progress(self, conn: _Connection, done) -> None:
        incoming = conn.incoming
        if done is False:
            if incoming.expects_continue and not conn.continued and incoming.body_start is not None:
                try:
                    conn.continued = conn.sock.send(CONTINUE) == len(CONTINUE)  # the buffer is empty: all of it goes
                except OSError:
                    conn.continued = False
                if not conn.continued:
                    self._close(conn)
                    return
            self._watch(conn, selectors.EVENT_READ)
            return
        if done is True and not incoming.urgent() and self.lanes.full():
            done = 503, "busy", "too many requests at once; retry later"
        if done is True:
            request, rest, urgent = incoming.request_bytes(), incoming.rest(), incoming.urgent()
            self._forget_request(conn)
            conn.incoming = IncompleteRequest(self.max_body, self.max_fields, rest) if rest else None
            conn.phase = RUNNING
            self._enter(conn, self.running)
            self._watch(conn, 0)  # nothing is read while the app runs: a pipelining peer waits its turn
            self.lanes.submit(urgent, lambda: self._serve(conn, request),
                              lambda result, error: self.method_queue.defer(self._answered, conn, result, error))
        else:
            self._refuse(conn, *done)

    def _forget_request(self, conn: _Connection) -> None:
        conn.incoming = None
        self._account(conn)

    def _refuse(self, conn: _Connection, status: int, code: str, message: str) -> None:
        refusals.note(f"{status} {code}", conn.address)
        self._forget_request(conn)
        self._send(conn, json_answer(status, code, message), keep=False)

    # -- running (in a thread) -----------------------------------------------------------------------
    def _serve(self, conn: _Connection, data: bytes) -> tuple[bytes, bool]:
        """Parse one request from memory, run the app, and return (the answer's bytes, keep alive)."""
        answer = _Answer()
        req = None
        try:
            parser, pieces, req = parse(self.cfg, data, conn.client)
            started = datetime.now()
            resp, environ = wsgi.create(req, answer, conn.client, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            environ.pop("wsgi.file_wrapper", None)  # a file is read into the answer like any body
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                for item in respiter:
                    resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(respiter, "close"):
                    respiter.close()
            return bytes(answer.data), read_exactly(parser, pieces) and not resp.should_close()
        except (http_errors.NoMoreData, StopIteration):
            # gunicorn's parser wanted more than the loop framed as this request: nothing to serve.
            return json_answer(400, "bad_request", "the request's length could not be read"), False
        except Exception as exc:
            answer.data.clear()  # nothing has left: a half-written answer becomes a whole error answer
            self.handle_error(req, answer, conn.client, exc)
            return bytes(answer.data), False

    def handle_error(self, req, client, addr, exc):
        """gunicorn's own answers (a request it cannot parse, a line too long, ...) in the app's JSON shape."""
        status, code = status_of(exc)
        message = str(exc)[:200] if status < 500 else "the request could not be handled; retry later"
        if status >= 500:
            log.exception("error handling a request")
        else:
            refusals.note(f"{status} {code}", addr[0] if isinstance(addr, tuple) else "-")
        client.sendall(json_answer(status, code, message))

    def _answered(self, conn: _Connection, result, error) -> None:
        if conn not in self.running:  # closed meanwhile (the worker is stopping)
            return
        if error is not None:
            log.error("error handling a request", exc_info=error)
            result = json_answer(503, "unavailable", "the request could not be handled; retry later"), False
        data, keep = result
        self._guarded(conn, self._send, conn, data, keep=keep and self.alive)

    # -- writing, lingering, closing ---------------------------------------------------------------------
    def _send(self, conn: _Connection, data: bytes, *, keep: bool) -> None:
        conn.out, conn.keep, conn.phase = memoryview(data), keep, WRITING
        self._enter(conn, self.writing, WRITE_SECONDS)
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if conn.out:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        if not conn.keep:
            self._linger(conn)
        elif conn.incoming is not None:  # a pipelined request is already here
            self._await_request(conn, 0, bytes(conn.incoming.data))
        else:
            self._await_request(conn, self.cfg.keepalive, kept=True)

    def _linger(self, conn: _Connection) -> None:
        try:
            conn.sock.shutdown(socket.SHUT_WR)  # our FIN follows the answer; this does not wait
        except OSError:
            self._close(conn)
            return
        conn.phase, conn.drained = LINGERING, 0
        self._forget_request(conn)
        self._enter(conn, self.lingering, LINGER_SECONDS)
        self._watch(conn, selectors.EVENT_READ)
        if len(self.lingering) > MAX_LINGERING:
            self._close(next(iter(self.lingering)))

    def _drain(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > LINGER_DRAIN_BYTES:
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        self._watch(conn, 0)
        self._forget_request(conn)
        self._enter(conn, None)
        try:
            conn.sock.close()  # no SO_LINGER: returns at once, whatever the peer does
        except OSError:
            pass
        if self.out_of_files:
            self.out_of_files = False
            self._set_accepting(True)


def _connections_the_files_allow(wanted: int) -> int:
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
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FILES_KEPT))
