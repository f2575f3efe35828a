"""The simulator's HTTP plumbing: a threaded http.server whose every request is recorded, then answered.

http.server rather than Flask, so that a fault can close the socket without any answer. Knows nothing of
Vonage: `handle(RecordedRequest) -> Answer` decides everything.
"""
from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict  # name -> list of values, as `parse_qs` returns them
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    def form(self):
        fields = parse_qs(self.body.decode(), keep_blank_values=True)
        return {name: values[-1] for name, values in fields.items()}


@dataclass
class Answer:
    """What to answer: `delay` seconds late, or not at all when `drop` (the socket is closed after reading).
    With `trickle`, one byte every `trickle` seconds: from the status line (`trickle_from` "headers") or
    after whole headers ("body"); `body_bytes` replaces the JSON body (a huge one, say)."""

    status: int
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    trickle: float = 0.0
    trickle_from: str = "headers"
    body_bytes: bytes | None = None


def problem(type_url: str, title: str, detail: str, **extra) -> dict:
    """An RFC 7807 problem body as Vonage's APIs send them."""
    return {"type": type_url, "title": title, "detail": detail, "instance": uuid.uuid4().hex, **extra}


class Server:
    """Serves `handle` on host:port from a background thread; `stopping` cuts short answers that wait."""

    def __init__(self, handle: Callable[[RecordedRequest], Answer], host: str = "127.0.0.1", port: int = 0,
                 stopping: threading.Event | None = None):
        self.stopping = stopping or threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(handle, self.stopping))
        self._httpd.daemon_threads = True
        self._httpd.handle_error = _ignore_disconnects(self._httpd.handle_error)
        bound_host, bound_port = self._httpd.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="simulator-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()  # wakes requests sleeping in a delay so shutdown does not wait for them
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _handler_for(handle, stopping):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self._answer()

        do_PUT = do_POST = do_DELETE = do_PATCH = do_GET

        def _answer(self):
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            recorded = RecordedRequest(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers=dict(self.headers.items()),
                body=self.rfile.read(length) if length else b"",
            )
            try:
                answer = handle(recorded)
            except Exception as exc:  # a bug in the simulator should fail the test loudly, not hang up
                answer = Answer(500, problem("https://developer.nexmo.com/api-errors#internal-error",
                                             "Simulator crashed", repr(exc)))
            if answer.delay:
                stopping.wait(answer.delay)
            if answer.drop:
                self.close_connection = True
                return
            payload = answer.body_bytes if answer.body_bytes is not None else (
                b"" if answer.body is None else json.dumps(answer.body).encode())
            self.send_response(answer.status)
            for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            if not answer.trickle:
                self.end_headers()
                self.wfile.write(payload)
                return
            head = b"".join(self._headers_buffer) + b"\r\n"
            self._headers_buffer = []
            if answer.trickle_from == "body":
                self.wfile.write(head)
                head = b""
            self._trickle(head + payload, answer.trickle)

        def _trickle(self, data: bytes, seconds: float) -> None:
            for i in range(len(data)):
                if stopping.is_set():
                    return
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                stopping.wait(seconds)

        def log_message(self, format, *args):
            pass  # keep pytest output clean; tests read `requests` instead

    return Handler


def _ignore_disconnects(handle_error):
    # A client that timed out has hung up before the delayed answer; that is the point of the fault.
    def handle(request, client_address):
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        handle_error(request, client_address)

    return handle
