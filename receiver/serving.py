"""gunicorn's threaded worker, except that a connection gets a thread only once its whole request is in.

gthread hands each new connection to a thread, which then blocks reading the request: sixteen idle
sockets (2 processes x 8 threads) or a few slow senders take every thread, and a signed callback
waits until Vonage gives up. Here the main loop reads each connection without blocking until the
request line, headers and body have all arrived (within REQUEST_SECONDS), and only then queues it
for a thread, which finds it all in memory. Whatever a thread still has to read or write is
bounded by IO_SECONDS. gunicorn's own error answers (400, 413, 414, 431, ...) are JSON in the
app's shape. `gunicorn.conf.py` selects it: worker_class = "receiver.serving.WholeRequestWorker".
"""
from __future__ import annotations

import errno
import json
import logging
import selectors
import socket
import struct
import time
from functools import partial

from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker, TConn

from receiver import config

log = logging.getLogger("gunicorn.error")

REQUEST_SECONDS = 10.0  # from a request's first byte to its last (Vonage sends a callback at once)
IO_SECONDS = 10.0  # a thread's socket reads and writes (a client that stops reading its answer)
_IO_TIMEVAL = struct.pack("ll", int(IO_SECONDS), 0)  # struct timeval, for SO_RCVTIMEO / SO_SNDTIMEO
MAX_HEADER_BYTES = 64 * 1024
READ_SIZE = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class IncompleteRequest:
    """The bytes of one request as they arrive; says when the whole request (headers and body) is in."""

    def __init__(self, max_body: int):
        self.data = bytearray()
        self.max_body = max_body
        self.body_start: int | None = None
        self.length: int | None = None  # Content-Length, or None for a chunked body
        self.expects_continue = False
        self._scan = 0  # chunked: where the next chunk-size line starts
        self._decoded = 0  # chunked: the body's size in the chunks read so far

    def feed(self, data: bytes) -> tuple[int, str, str] | bool:
        """Add bytes; True when the request is complete, False while more is due, or (status,
        code, message) for a request refused before any thread sees it."""
        self.data += data
        if self.body_start is None:
            end = self.data.find(b"\r\n\r\n")
            if end < 0:
                if len(self.data) > MAX_HEADER_BYTES:
                    return 431, "request_header_fields_too_large", "the request line and headers are too large"
                return False
            self.body_start = end + 4
            refused = self._read_headers(bytes(self.data[:end]))
            if refused:
                return refused
            self._scan = self.body_start
        if self.length is not None:
            return len(self.data) - self.body_start >= self.length
        return self._chunked_complete()

    def _read_headers(self, head: bytes):
        # Only three headers decide how much is still to come; gunicorn's parser reads the rest.
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
            line_end = self.data.find(b"\r\n", self._scan)
            if line_end < 0:
                return False
            size_text = bytes(self.data[self._scan:line_end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return True  # not a chunk size: gunicorn's parser answers 400
            if size == 0:  # the last chunk; complete once the (optional) trailers end
                return self.data.find(b"\r\n\r\n", line_end) >= 0
            self._decoded += size
            if self._decoded > self.max_body:
                return 413, "request_entity_too_large", f"the body is larger than {self.max_body} bytes"
            next_line = line_end + 2 + size + 2
            if len(self.data) < next_line:
                self._decoded -= size  # counted again once the chunk is all here
                return False
            self._scan = next_line

    def request_bytes(self, continued: bool) -> bytes:
        if not continued:
            return bytes(self.data)
        # We already said 100 Continue: the thread must not say it a second time.
        head, body = bytes(self.data[:self.body_start]), bytes(self.data[self.body_start:])
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")]
        return b"\r\n".join(lines) + body


def _header(lowered_head: bytes, name: bytes) -> bytes:
    """The first value of header `name` in a lowercased header block (b"" when absent)."""
    at = lowered_head.find(b"\r\n" + name + b":")
    if at < 0:
        return b""
    start = at + len(name) + 3
    end = lowered_head.find(b"\r\n", start)
    return lowered_head[start:end if end >= 0 else len(lowered_head)].strip()


class _Conn(TConn):
    """A connection whose request may already be in memory when its thread starts."""

    def __init__(self, *args):
        super().__init__(*args)
        self.request_bytes = b""
        self.incoming: IncompleteRequest | None = None
        self.deadline = 0.0
        self.continued = False

    def init(self):
        super().init()  # creates the parser on the first request
        if self.request_bytes:
            self.parser.unreader.unread(self.request_bytes)
            self.request_bytes = b""


class WholeRequestWorker(ThreadWorker):
    """gthread with the reading of each request done in the main loop, without blocking."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = {**config.defaults(), **config.from_env()}
        self.max_body = settings["MAX_CONTENT_LENGTH"]
        self.arriving: set[_Conn] = set()

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        # Whatever a thread still reads or writes is bounded, by the kernel: no poll() per recv or send.
        client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _IO_TIMEVAL)
        client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _IO_TIMEVAL)
        conn = _Conn(self.cfg, client_sock, client_addr, listener.getsockname())
        if self.cfg.is_ssl:  # TLS records are not a request: gthread's own way, in a thread
            self.enqueue_req(conn)
            return
        # A new connection has keepalive seconds to start its request, like an idle kept-alive one.
        self._await_request(conn, time.monotonic() + self.cfg.keepalive)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_some, conn))

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection has its next request coming: read it here, not in a thread."""
        self.keepalived_conns.remove(conn)
        self._await_request(conn, time.monotonic() + REQUEST_SECONDS)
        self._read_some(conn, client)  # usually the whole request is here already
        if conn in self.arriving:  # it is not: wait for the rest with this worker's own callback
            self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self._read_some, conn))

    def _await_request(self, conn: _Conn, deadline: float) -> None:
        conn.incoming, conn.deadline, conn.continued = IncompleteRequest(self.max_body), deadline, False
        self.arriving.add(conn)

    def _read_some(self, conn: _Conn, client) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:  # the client went away
            self._close(conn)
            return
        if not conn.incoming.data:  # the request has begun: it has REQUEST_SECONDS to arrive whole
            conn.deadline = time.monotonic() + REQUEST_SECONDS
        done = conn.incoming.feed(data)
        if done is False:
            if conn.incoming.expects_continue and not conn.continued and conn.incoming.body_start is not None:
                conn.continued = self._send(conn, CONTINUE)
            return
        self._stop_reading(conn)
        if done is True:
            conn.request_bytes, conn.data_ready = conn.incoming.request_bytes(conn.continued), True
            conn.incoming = None
            self.enqueue_req(conn)
        else:
            self._refuse(conn, *done)

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.arriving if c.deadline <= now]:
            self._stop_reading(conn)
            if conn.incoming.data:
                self._refuse(conn, 408, "request_timeout", f"the request did not arrive within {REQUEST_SECONDS:g} s")
            else:
                self._close(conn)  # idle: nothing to answer

    def _refuse(self, conn: _Conn, status: int, code: str, message: str) -> None:
        log.warning("refused a request from %s: %d %s", conn.client[0] if conn.client else "-", status, code)
        self._send(conn, json_answer(status, code, message))
        self._close(conn)

    @staticmethod
    def _send(conn: _Conn, data: bytes) -> bool:
        try:
            return conn.sock.send(data) == len(data)  # small enough for the socket's buffer
        except OSError:
            return False

    def _stop_reading(self, conn: _Conn) -> None:
        if conn in self.arriving:
            self.arriving.discard(conn)
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass

    def _close(self, conn: _Conn) -> None:
        self._stop_reading(conn)
        self.nr_conns -= 1
        conn.close()

    def handle_error(self, req, client, addr, exc):
        """gunicorn's own answers (a request it cannot parse, a line too long, ...) in the app's JSON shape."""
        status, code = _status_of(exc)
        message = str(exc)[:200] if status < 500 else "the request could not be handled; retry later"
        if status >= 500:
            log.exception("error handling a request")
        else:
            log.warning("invalid request from %s: %s", (addr or ("-",))[0], message)
        try:
            client.setblocking(False)
            client.send(json_answer(status, code, message))
        except OSError:
            pass


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
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
