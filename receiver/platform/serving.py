"""The web server's worker: one non-blocking loop does every socket operation; threads only run the app.

Vonage queues callbacks per account, so nothing a peer does may hold up the answer to a signed
callback. gunicorn's gthread lets peers hold it up: a thread blocks reading a request not yet sent,
or writing an answer nobody reads, and its main loop blocks in the graceful close of each connection
not kept alive (`util.close_graceful` waits up to 2 s for the peer's FIN): twenty peers that send
`Connection: close` and linger stop every acknowledgement. Here the loop reads each request whole
into memory, `Lanes` threads run the app into memory (webhooks first; other requests on two threads
with a short queue), and the loop sends each answer as the peer's window allows; every phase has its
deadline (receiver.platform.connections), and a close never waits for the peer.

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

import contextlib
import logging
import os
import selectors
import sys
import time

from gunicorn.workers import base
from gunicorn.workers.gthread import PollableMethodQueue

from receiver.platform import config
from receiver.platform.connections import Connection, OutOfFiles, Phases, accepted, connections_the_files_allow
from receiver.platform.framing import IncompleteRequest, json_answer, status_of
from receiver.platform.lanes import UNAVAILABLE, Lanes, serve
from receiver.platform.logs import Tally

log = logging.getLogger("gunicorn.error")
# A flood of requests refused for one reason is one log line every few seconds, not one a request.
refusals = Tally(log, "refused %(count)d request(s) from %(sources)s: %(what)s")

REQUEST_SECONDS = 10.0  # from a request's first byte to its last (Vonage sends a callback at once)
WRITE_SECONDS = 10.0  # from an answer being ready to its last byte taken by the kernel
SWEEP_SECONDS = 0.1  # how often deadlines are looked at
NOTIFY_SECONDS = 1.0
STOP_LINGER_SECONDS = 1.0  # a stopping worker waits this long for the request of a connection it accepted
ACCEPT_AT_ONCE = 64


class NonBlockingWorker(base.Worker):
    """gunicorn worker whose one loop does every socket operation without blocking; see the module."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = {**config.defaults(), **config.from_env()}
        self.max_body = settings["MAX_CONTENT_LENGTH"]
        self.max_fields = self.cfg.limit_request_fields or 32768
        self.max_connections = self.cfg.worker_connections
        self.conns: Phases | None = None
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

    def init_process(self):
        from receiver.worker import process  # not at import: gunicorn's master loads this class
        self.role = process.take_role()  # held by the one process that runs the worker instead of serving
        self.max_connections = connections_the_files_allow(self.max_connections)
        self.lanes = Lanes(self.cfg.threads)
        self.poller = selectors.DefaultSelector()
        self.conns = Phases(self.poller)
        self.method_queue.init()
        super().init_process()

    def run(self):
        if self.role is not None and getattr(self.wsgi, "config", {}).get("WORKER_IN_WEB"):
            from receiver.worker import process

            return process.run(self)
        self.poller.register(self.method_queue.fileno(), selectors.EVENT_READ,
                             lambda fileobj, mask: self.method_queue.run_callbacks(fileobj))
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
            if stopping_until is not None and (not self.conns.busy(stopping=True) or now > stopping_until):
                break
            for key, mask in self.poller.select(SWEEP_SECONDS):
                if isinstance(key.data, Connection):
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
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
        for conn in self.conns:
            self.conns.close(conn)
        self.lanes.stop()
        self.poller.close()
        self.method_queue.close()
        for listener in self.sockets:
            listener.close()

    def _guarded(self, conn: Connection, step, *args, **kwargs) -> None:
        """One step of one connection; a fault in it closes that connection, never the loop."""
        try:
            step(*args, **kwargs)
        except Exception:
            log.exception("closing a connection from %s after a fault in serving it", conn.address)
            self.conns.close(conn)

    def handle_quit(self, sig, frame):
        """SIGQUIT, SIGINT: stop now, without waiting for the requests in threads."""
        self.lanes.stop()
        super().handle_quit(sig, frame)

    def _drain_wakeups(self, fileobj, mask):
        with contextlib.suppress(OSError):
            while os.read(self.PIPE[0], 4096):
                pass

    def _begin_stopping(self):
        self._set_accepting(False)
        for conn in [*self.conns.fresh, *self.conns.kept]:  # nothing asked of these yet: a request on its
            self.conns.enter(conn, self.conns.fresh, STOP_LINGER_SECONDS)  # way is served, with Connection: close

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
        """Act on every deadline that has passed; after running out of file descriptors, try again."""
        if self.out_of_files:
            self.out_of_files = False
            self._set_accepting(True)
        for phase, conn in self.conns.expired(now):
            if phase is self.conns.arriving:
                self._guarded(conn, self._refuse, conn, 408, "request_timeout",
                              f"the request did not arrive within {REQUEST_SECONDS:g} s")
            else:  # idle, an answer not taken in time, or a linger that is over
                self.conns.close(conn)

    def _accept(self, listener, mask):
        try:
            for conn in accepted(listener, ACCEPT_AT_ONCE):
                self._await_request(conn, self.cfg.keepalive or REQUEST_SECONDS)
                if len(self.conns) > self.max_connections:
                    self._make_room(spare=conn)
        except OutOfFiles:
            self._make_room(out_of_files=True)

    def _make_room(self, out_of_files: bool = False, spare: Connection | None = None) -> None:
        """Close the connection that costs least to lose (Phases.cheapest), never `spare`, just accepted;
        a request begun is answered 503 first. Without any, stop accepting until one closes."""
        conn = self.conns.cheapest(spare)
        if conn is not None:
            if conn in self.conns.arriving:
                conn.linger = False  # given up: its slot is needed now, not after a linger
                self._refuse(conn, 503, "busy", "too many connections; retry later")
            else:
                self.conns.close(conn)
            return
        if out_of_files:
            self.out_of_files = True
            self._set_accepting(False)

    def _await_request(self, conn: Connection, idle_seconds: float, data: bytes = b"", *, kept=False) -> None:
        conn.phase, conn.continued = Connection.READING, False
        conn.incoming = IncompleteRequest(self.max_body, self.max_fields, data)
        self.conns.hold(conn)
        if data:
            self.conns.enter(conn, self.conns.arriving, REQUEST_SECONDS)
            self._progress(conn, conn.incoming.feed())
        else:
            self.conns.enter(conn, self.conns.kept if kept else self.conns.fresh, idle_seconds)
            self.conns.watch(conn, selectors.EVENT_READ)

    def _ready(self, conn: Connection) -> None:
        if conn.phase == Connection.READING:
            self._read(conn)
        elif conn.phase == Connection.WRITING:
            self._write(conn)
        elif conn.phase == Connection.LINGERING:
            self.conns.drain(conn)

    def _read(self, conn: Connection) -> None:
        data = self.conns.receive(conn)
        if not data:
            return
        if conn not in self.conns.arriving:  # the request has begun: it has REQUEST_SECONDS to arrive whole
            self.conns.enter(conn, self.conns.arriving, REQUEST_SECONDS)
        done = conn.incoming.feed(data)
        self.conns.hold(conn)
        if done is False and self.conns.over_budget(conn):
            done = 503, "busy", "too many large requests at once; retry later"
        self._progress(conn, done)

    def _progress(self, conn: Connection, done) -> None:
        incoming = conn.incoming
        if done is False:
            if incoming.expects_continue and not conn.continued and incoming.body_start is not None:
                if not self.conns.say_continue(conn):
                    return
            self.conns.watch(conn, selectors.EVENT_READ)
            return
        if done is True and self.lanes.full(incoming.urgent()):
            done = 503, "busy", "too many requests at once; retry later"
        if done is True:
            request, rest, urgent = incoming.request_bytes(), incoming.rest(), incoming.urgent()
            conn.incoming = IncompleteRequest(self.max_body, self.max_fields, rest) if rest else None
            self.conns.hold(conn, len(request) + len(rest))  # counted until the answer is ready
            conn.phase = Connection.RUNNING
            self.conns.enter(conn, self.conns.running)
            self.conns.watch(conn, 0)  # nothing is read while the app runs: a pipelining peer waits its turn
            self.lanes.submit(urgent, lambda: serve(self, conn.client, conn.server, request),
                              lambda result, error: self.method_queue.defer(self._answered, conn, result, error))
        else:
            self._refuse(conn, *done)

    def _refuse(self, conn: Connection, status: int, code: str, message: str) -> None:
        refusals.note(f"{status} {code}", conn.address)
        self.conns.forget_request(conn)
        self._send(conn, json_answer(status, code, message), keep=False)

    def handle_error(self, req, client, addr, exc):
        """gunicorn's own answers (a request it cannot parse, a line too long, ...) in the app's JSON shape."""
        status, code = status_of(exc)
        if status >= 500:
            log.exception("error handling a request")
        else:
            refusals.note(f"{status} {code}", addr[0] if isinstance(addr, tuple) else "-")
        client.sendall(json_answer(status, code, str(exc)[:200] if status < 500 else UNAVAILABLE))

    def _answered(self, conn: Connection, result, error) -> None:
        if conn not in self.conns.running:  # closed meanwhile (the worker is stopping)
            return
        if error is not None:
            log.error("error handling a request", exc_info=error)
            result = json_answer(503, "unavailable", UNAVAILABLE), False
        data, keep = result
        self.conns.hold(conn)  # what is left in memory: a pipelined request, if any
        self._guarded(conn, self._send, conn, data, keep=keep and self.alive)

    def _send(self, conn: Connection, data: bytes, *, keep: bool) -> None:
        conn.out, conn.keep, conn.phase = memoryview(data), keep, Connection.WRITING
        self.conns.enter(conn, self.conns.writing, WRITE_SECONDS)
        self._write(conn)

    def _write(self, conn: Connection) -> None:
        if not self.conns.send_some(conn):
            return
        if not conn.keep:
            self.conns.linger(conn)
        elif conn.incoming is not None:  # a pipelined request is already here
            self._await_request(conn, 0, bytes(conn.incoming.data))
        else:
            self._await_request(conn, self.cfg.keepalive, kept=True)

