"""The web server's worker: one non-blocking loop does every socket operation; threads only run the app.

Vonage queues callbacks per account, so nothing a peer does may hold up the answer to a signed
callback. gunicorn's threaded worker (gthread) lets peers hold it up in two ways: a thread blocks
reading a request that has not arrived, or writing an answer nobody reads; and its main loop blocks
too, in the graceful close of every connection that is not kept alive (`util.close_graceful` waits
up to 2 s in `recv` for the peer's FIN). Twenty peers that send `Connection: close` and then linger
stop every acknowledgement. Here a connection moves through four phases, each with its deadline,
and only the one in the middle touches a thread:

    reading   the loop reads what has arrived, without blocking, until the request line, headers
              and body are all in memory (KEEPALIVE seconds to begin, REQUEST_SECONDS to finish);
    running   a thread parses those bytes with gunicorn's own parser and runs the app; the answer
              is written to memory, never to the socket;
    writing   the loop sends the answer as the peer's window allows (WRITE_SECONDS in all);
    lingering after our FIN, the loop reads and drops what the peer still sends, so that it reads
              our answer rather than a reset (LINGER_SECONDS, at most MAX_LINGERING at once).

Then a kept-alive connection is reading again (a pipelined request already read is served from
memory first), and any other is closed, at once: a close never waits for the peer.

What this class takes from gunicorn, and where it runs. It subclasses `base.Worker`, not gthread:
nothing of gthread's connection handling (`accept`, `handle`, `finish_request`, keep-alive,
`murder_keepalived`/`murder_pending`, its `close_graceful`) is inherited. From `base.Worker` it keeps
process setup, signals (their wakeup pipe is one of the loop's sockets, so SIGTERM is seen at once)
and `notify()` (a utime on a file; the loop calls it at least every second, so a busy or attacked
worker is never mistaken for a hung one). On the loop: `accept` (non-blocking, many at a time; out of
file descriptors, the connection that has waited longest with nothing sent is closed instead), the
reads and writes above (non-blocking `recv`/`send`, each returning what the kernel has), `shutdown`
and `close` (neither waits for the peer), and the refusals decided from the bytes alone (408 too
slow, 413 body too large, 431 headers too large or too many, 503 too much buffered): JSON answers
queued like any other. In a thread: gunicorn's `RequestParser` over the bytes in memory, its
`wsgi.create` and `Response` writing into a buffer, the access log, and `handle_error` (gunicorn's
own 400/414/431/501 ... as JSON in the app's shape, into the same buffer). A request whose bytes the
parser reads differently from the loop (left over, or missing) ends its connection after the
answer, so no request can be smuggled behind another. TLS is not served here: terminate it in
front (nginx, the platform's router). `gunicorn.conf.py` selects this class.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import selectors
import socket
import sys
import time
from concurrent import futures
from datetime import datetime

from gunicorn import http
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi
from gunicorn.workers import base
from gunicorn.workers.gthread import PollableMethodQueue

from receiver import config
from receiver.logs import Tally

log = logging.getLogger("gunicorn.error")
# A flood of requests refused for one reason is one log line every few seconds, not one a request.
refusals = Tally(log, "refused %(count)d request(s) from %(sources)s: %(what)s")

REQUEST_SECONDS = 10.0  # from a request's first byte to its last (Vonage sends a callback at once)
WRITE_SECONDS = 10.0  # from an answer being ready to its last byte taken by the kernel
LINGER_SECONDS = 2.0  # after our FIN, for the peer's (what gunicorn's graceful close waits, off the loop)
MAX_LINGERING = 128  # closing connections kept lingering at once; past it the oldest is closed now
LINGER_DRAIN_BYTES = 256 * 1024  # what a lingering peer may still send before it is cut off
MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNK_LINE = 1024  # a chunk-size line, extensions included
READ_SIZE = 64 * 1024
FREE_BYTES = 64 * 1024  # what any request may hold in memory while it arrives (a callback is smaller)
BUFFER_BUDGET = 64 * 1024 * 1024  # what all requests of a process may hold past their FREE_BYTES
SWEEP_SECONDS = 0.1  # how often deadlines are looked at
NOTIFY_SECONDS = 1.0
ACCEPT_AT_ONCE = 64
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

READING, RUNNING, WRITING, LINGERING = "reading", "running", "writing", "lingering"


class IncompleteRequest:
    """The bytes of one request as they arrive; says when the whole request (headers and body) is in,
    and where it ends (what follows is the next, pipelined, request)."""

    def __init__(self, max_body: int, max_fields: int, data: bytes = b""):
        self.data = bytearray(data)
        self.max_body = max_body
        self.max_fields = max_fields
        self.body_start: int | None = None
        self.length: int | None = None  # Content-Length, or None for a chunked body
        self.end: int | None = None  # where the request ends, once it is complete
        self.expects_continue = False
        self._head_scan = 0  # where the search for the end of the headers goes on from
        self._scan = 0  # chunked: where the next chunk-size line starts
        self._decoded = 0  # chunked: the body's size in the chunks read so far
        self._trailer_scan = 0  # chunked: where the search for the end of the trailers goes on from

    def feed(self, data: bytes = b"") -> tuple[int, str, str] | bool:
        """Add bytes; True when the request is complete, False while more is due, or (status,
        code, message) for a request refused before any thread sees it."""
        self.data += data
        if self.body_start is None:
            # Searched from where the last search stopped: a peer dribbling its headers costs no rescans.
            end = self.data.find(b"\r\n\r\n", self._head_scan)
            if end < 0:
                if len(self.data) > MAX_HEADER_BYTES:
                    return 431, "request_header_fields_too_large", "the request line and headers are too large"
                self._head_scan = max(0, len(self.data) - 3)
                return False
            if end > MAX_HEADER_BYTES:
                return 431, "request_header_fields_too_large", "the request line and headers are too large"
            self.body_start = end + 4
            refused = self._read_headers(bytes(self.data[:end]))
            if refused:
                return refused
            self._scan = self.body_start
        if self.length is not None:
            if len(self.data) - self.body_start < self.length:
                return False
            self.end = self.body_start + self.length
            return True
        return self._chunked_complete()

    def _read_headers(self, head: bytes):
        # Only three headers decide how much is still to come; gunicorn's parser reads the rest.
        if head.count(b"\r\n") > self.max_fields:  # one line is the request line
            return 431, "request_header_fields_too_large", f"more than {self.max_fields} header fields"
        lowered = head.lower()
        self.expects_continue = _header(lowered, b"expect") == b"100-continue"
        if b"chunked" in _header(lowered, b"transfer-encoding"):
            self.length = None
        elif (length := _header(lowered, b"content-length") or b"0").isdigit():
            self.length = int(length)
            if self.length > self.max_body:
                return 413, "request_entity_too_large", f"the body is larger than {self.max_body} bytes"
        else:
            self.length = 0  # malformed: gunicorn's parser answers 400 once a thread reads it
        return None

    def _chunked_complete(self) -> bool | tuple[int, str, str]:
        while True:
            line_end = self.data.find(b"\r\n", self._scan, self._scan + MAX_CHUNK_LINE)
            if line_end < 0:
                if len(self.data) - self._scan >= MAX_CHUNK_LINE:
                    self.end = len(self.data)  # no chunk size is this long: gunicorn's parser answers 400
                    return True
                return False
            size_text = bytes(self.data[self._scan:line_end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self.end = len(self.data)  # not a chunk size: gunicorn's parser answers 400
                return True
            if size == 0:  # the last chunk; complete once the (optional) trailers end
                trailers_end = self.data.find(b"\r\n\r\n", max(line_end, self._trailer_scan))
                if trailers_end < 0:
                    if len(self.data) - line_end > MAX_HEADER_BYTES:
                        return 431, "request_header_fields_too_large", "the trailers are too large"
                    self._trailer_scan = max(line_end, len(self.data) - 3)
                    return False
                self.end = trailers_end + 4
                return True
            if self._decoded + size > self.max_body:
                return 413, "request_entity_too_large", f"the body is larger than {self.max_body} bytes"
            next_line = line_end + 2 + size + 2
            if len(self.data) < next_line:
                return False
            self._decoded += size
            self._scan = next_line

    def request_bytes(self) -> bytes:
        """The request, without an `Expect: 100-continue` (its body is here: no thread must answer 100)."""
        if not self.expects_continue:
            return bytes(self.data[:self.end])
        head, body = bytes(self.data[:self.body_start]), bytes(self.data[self.body_start:self.end])
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")]
        return b"\r\n".join(lines) + body

    def rest(self) -> bytes:
        """What arrived after this request: the start of the next one."""
        return bytes(self.data[self.end:])


def _header(lowered_head: bytes, name: bytes) -> bytes:
    """The first value of header `name` in a lowercased header block (b"" when absent)."""
    at = lowered_head.find(b"\r\n" + name + b":")
    if at < 0:
        return b""
    start = at + len(name) + 3
    end = lowered_head.find(b"\r\n", start)
    return lowered_head[start:end if end >= 0 else len(lowered_head)].strip()


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


class _Answer:
    """Stands in for the socket while a thread runs the app: gunicorn's `Response` writes here."""

    def __init__(self):
        self.data = bytearray()

    def sendall(self, data) -> None:
        self.data += data

    def send(self, data) -> int:  # only ever a 100 Continue, which the loop has answered already
        return len(data)


class NonBlockingWorker(base.Worker):
    """gunicorn worker whose one loop does every socket operation without blocking; see the module."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = {**config.defaults(), **config.from_env()}
        self.max_body = settings["MAX_CONTENT_LENGTH"]
        self.max_fields = self.cfg.limit_request_fields or 32768
        self.max_connections = self.cfg.worker_connections
        # One ordered set per timed phase: each phase has one timeout, so its deadlines are in
        # insertion order and a sweep only looks at the front. Kept-alive idle ones wait in `idle`.
        self.idle: dict[_Connection, None] = {}  # reading, nothing of a request yet
        self.arriving: dict[_Connection, None] = {}  # reading, a request begun
        self.writing: dict[_Connection, None] = {}
        self.lingering: dict[_Connection, None] = {}
        self.running: set[_Connection] = set()
        self.buffered = 0  # request bytes held in memory past each connection's first FREE_BYTES
        self.accepting = False
        self.out_of_files = False
        self.tpool: futures.ThreadPoolExecutor | None = None
        self.poller: selectors.BaseSelector | None = None
        self.method_queue = PollableMethodQueue()

    @classmethod
    def check_config(cls, cfg, log):
        if cfg.is_ssl:
            print("Error: receiver.serving.NonBlockingWorker serves plain HTTP: terminate TLS in front of it "
                  "(nginx, the platform's router) and remove certfile/keyfile", file=sys.stderr, flush=True)
            raise SystemExit(2)

    # -- the loop -----------------------------------------------------------------------------------
    def init_process(self):
        self.tpool = futures.ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="request")
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
                    self._ready(key.data, mask)
                else:
                    key.data(key.fileobj, mask)
            now = time.monotonic()
            if now - swept >= SWEEP_SECONDS:
                self._sweep(now)
                refusals.flush(now)
                swept = now
            if not self.is_parent_alive():
                break
        for conn in list(self._all()):
            self._close(conn)
        self.tpool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()
        for listener in self.sockets:
            listener.close()

    def handle_quit(self, sig, frame):
        """SIGQUIT, SIGINT: stop now, without waiting for the requests in threads."""
        self.tpool.shutdown(wait=False, cancel_futures=True)
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

    def _all(self):
        yield from self.idle
        yield from self.arriving
        yield from self.running
        yield from self.writing
        yield from self.lingering

    def _begin_stopping(self):
        self._set_accepting(False)
        for conn in list(self.idle):  # nothing asked of these: close them now
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
        for phase in (self.idle, self.arriving, self.writing, self.lingering):
            while phase:
                conn = next(iter(phase))
                if conn.deadline > now:
                    break
                self._expired(conn)

    def _expired(self, conn: _Connection) -> None:
        if conn in self.arriving:
            self._refuse(conn, 408, "request_timeout", f"the request did not arrive within {REQUEST_SECONDS:g} s")
        else:  # idle, an answer not read in time, or a linger that is over
            self._close(conn)

    def _enter(self, conn: _Connection, phase: dict | set | None, seconds: float = 0.0) -> None:
        for held in (self.idle, self.arriving, self.writing, self.lingering):
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
                self._make_room()

    def _count(self) -> int:
        return len(self.idle) + len(self.arriving) + len(self.running) + len(self.writing) + len(self.lingering)

    def _make_room(self, out_of_files: bool = False) -> None:
        """Close the connection that costs least to lose: one lingering, else the one idle longest, else
        the request that has taken longest to arrive. Without one, stop accepting until one closes."""
        for phase in (self.lingering, self.idle, self.arriving):
            if phase:
                conn = next(iter(phase))
                if phase is self.arriving:
                    self._refuse(conn, 503, "busy", "too many connections; retry later")
                else:
                    self._close(conn)
                return
        if out_of_files:
            self.out_of_files = True
            self._set_accepting(False)

    # -- reading ------------------------------------------------------------------------------------
    def _await_request(self, conn: _Connection, idle_seconds: float, data: bytes = b"") -> None:
        conn.phase, conn.continued = READING, False
        conn.incoming = IncompleteRequest(self.max_body, self.max_fields, data)
        self._account(conn)
        if data:
            self._enter(conn, self.arriving, REQUEST_SECONDS)
            self._progress(conn, conn.incoming.feed())
        else:
            self._enter(conn, self.idle, idle_seconds)
            self._watch(conn, selectors.EVENT_READ)

    def _ready(self, conn: _Connection, mask: int) -> None:
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
        if conn in self.idle:  # the request has begun: it has REQUEST_SECONDS to arrive whole
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
        if done is True:
            request, rest = incoming.request_bytes(), incoming.rest()
            self._forget_request(conn)
            conn.incoming = IncompleteRequest(self.max_body, self.max_fields, rest) if rest else None
            conn.phase = RUNNING
            self._enter(conn, self.running)
            self._watch(conn, 0)  # nothing is read while the app runs: a pipelining peer waits its turn
            future = self.tpool.submit(self._serve, conn, request)
            future.add_done_callback(lambda fut: self.method_queue.defer(self._answered, conn, fut))
        else:
            self._refuse(conn, *done)

    def _forget_request(self, conn: _Connection) -> None:
        conn.incoming = None
        self._account(conn)

    def _refuse(self, conn: _Connection, status: int, code: str, message: str) -> None:
        self._tally_refusal(conn, status, code)
        self._forget_request(conn)
        self._send(conn, json_answer(status, code, message), keep=False)

    def _tally_refusal(self, conn: _Connection, status: int, code: str) -> None:
        refusals.note(f"{status} {code}", conn.client[0] if isinstance(conn.client, tuple) else "-")

    # -- running (in a thread) -----------------------------------------------------------------------
    def _serve(self, conn: _Connection, data: bytes) -> tuple[bytes, bool]:
        """Parse one request from memory, run the app, and return (the answer's bytes, keep alive)."""
        answer = _Answer()
        req = None
        try:
            parser = http.RequestParser(self.cfg, [data], conn.client)
            req = next(parser)
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
            # Kept alive only if gunicorn's parser read exactly the bytes the loop framed as this request.
            whole = parser.finish_body() and not parser.unreader.buf.getvalue()
            return bytes(answer.data), whole and not resp.should_close()
        except (http_errors.NoMoreData, StopIteration):
            # gunicorn's parser wanted more than the loop framed as this request: nothing to serve.
            return json_answer(400, "bad_request", "the request's length could not be read"), False
        except Exception as exc:
            answer.data.clear()  # nothing has left: a half-written answer becomes a whole error answer
            self.handle_error(req, answer, conn.client, exc)
            return bytes(answer.data), False

    def handle_error(self, req, client, addr, exc):
        """gunicorn's own answers (a request it cannot parse, a line too long, ...) in the app's JSON shape."""
        status, code = _status_of(exc)
        message = str(exc)[:200] if status < 500 else "the request could not be handled; retry later"
        if status >= 500:
            log.exception("error handling a request")
        else:
            refusals.note(f"{status} {code}", (addr or ("-",))[0] if isinstance(addr, tuple) else "-")
        client.sendall(json_answer(status, code, message))

    def _answered(self, conn: _Connection, future: futures.Future) -> None:
        if conn not in self.running:  # closed meanwhile (the worker is stopping)
            return
        try:
            data, keep = future.result()
        except BaseException:  # noqa: BLE001 (a handler's SystemExit included): the app's 503, never a hang
            log.exception("error handling a request")
            data, keep = json_answer(503, "unavailable", "the request could not be handled; retry later"), False
        if not data:
            self._close(conn)
            return
        self._send(conn, data, keep=keep and self.alive)

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
            self._await_request(conn, self.cfg.keepalive)

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


_STATUS = (
    (http_errors.LimitRequestLine, 414, "uri_too_long"),
    (http_errors.LimitRequestHeaders, 431, "request_header_fields_too_large"),
    (http_errors.UnsupportedTransferCoding, 501, "not_implemented"),
    (http_errors.ExpectationFailed, 417, "expectation_failed"),
    (http_errors.ForbiddenProxyRequest, 403, "forbidden"),
    (http_errors.InvalidResponseHeader, 503, "unavailable"),  # the application's fault, not the client's
    (http_errors.InvalidResponseHeaderName, 503, "unavailable"),
    (http_errors.ConfigurationProblem, 503, "unavailable"),
    (http_errors.ParseException, 400, "bad_request"),
)


def _status_of(exc: BaseException) -> tuple[int, str]:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            return status, code
    # Nothing the app receives answers 500: an unexpected error is a 503, which Vonage retries.
    return 503, "unavailable"


def json_answer(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection, with the app's JSON error body."""
    body = json.dumps({"error": code, "message": message}).encode()
    reason = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 413: "Content Too Large",
              414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
              501: "Not Implemented", 503: "Service Unavailable"}.get(status, "Error")
    retry = "Retry-After: 1\r\n" if status == 503 else ""
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n{retry}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
