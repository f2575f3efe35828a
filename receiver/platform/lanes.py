"""The threads that run the app for the serving loop, and how a thread reads a request from memory.

A thread never touches a socket: gunicorn's parser reads the request's bytes from memory (`parse`),
gunicorn's `Response` writes the answer into an `Answer`, and the loop sends it. Webhook requests are
taken first; other requests (pages, the API, probes, 404s) take OTHERS_AT_ONCE threads at most, with a
short queue, so a flood of them waits behind callbacks and competes with them for the interpreter on
few threads.
"""
from __future__ import annotations

import threading
from collections import deque
from datetime import datetime

from gunicorn import http
from gunicorn.http import errors as http_errors
from gunicorn.http import wsgi

from receiver.platform.framing import json_answer

OTHERS_AT_ONCE = 2  # threads other requests may take at once
OTHERS_QUEUED = 4  # other requests waiting per such thread; past that the loop answers 503 at once
URGENT_QUEUED = 32  # webhook requests waiting per thread; past that too (a flood of forgeries is bounded)
PARSE_PIECE = 8 * 1024  # what gunicorn's parser is handed at a time (it copies what is left per chunk)
UNAVAILABLE = "the request could not be handled; retry later"


class Lanes:
    """`threads` threads that run jobs: webhooks first, other requests on OTHERS_AT_ONCE of them at most."""

    def __init__(self, threads: int):
        self.max_others = max(1, min(OTHERS_AT_ONCE, threads - 1))
        self.max_urgent_waiting = threads * URGENT_QUEUED
        self._ready = threading.Condition()
        self._urgent: deque = deque()
        self._others: deque = deque()
        self._others_running = 0
        self._stopped = False
        for n in range(threads):
            threading.Thread(target=self._run, name=f"request-{n}", daemon=True).start()

    def full(self, urgent: bool) -> bool:
        """Enough requests of this lane are waiting already (a flood of them must not pile up)."""
        if urgent:
            return len(self._urgent) >= self.max_urgent_waiting
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


class Answer:
    """Stands in for the socket while a thread runs the app: gunicorn's `Response` writes here."""

    def __init__(self):
        self.data = bytearray()

    def sendall(self, data) -> None:
        self.data += data

    def send(self, data) -> int:  # only ever a 100 Continue, which the loop has answered already
        return len(data)


class Pieces:
    """A request's bytes for gunicorn's parser, a piece at a time; says whether it wanted more."""

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
    pieces = Pieces(data)
    parser = http.RequestParser(cfg, pieces, client)
    return parser, pieces, next(parser)


def read_exactly(parser, pieces: Pieces) -> bool:
    """True when gunicorn's parser read the request's bytes and no more and no fewer (its body drained
    first): only then may the connection serve another request."""
    return parser.finish_body() and not parser.unreader.buf.getvalue() and not pieces.left() \
        and not pieces.wanted_more


def serve(worker, client, server, data: bytes) -> tuple[bytes, bool]:
    """In a thread: parse one request from memory, run `worker`'s app, and return (the answer's bytes,
    whether the connection may serve another request). Errors are answers, in the app's JSON shape."""
    answer = Answer()
    req = None
    try:
        parser, pieces, req = parse(worker.cfg, data, client)
        started = datetime.now()
        resp, environ = wsgi.create(req, answer, client, server, worker.cfg)
        environ["wsgi.multithread"] = True
        environ.pop("wsgi.file_wrapper", None)  # a file is read into the answer like any body
        worker.nr += 1
        if worker.nr >= worker.max_requests and worker.alive:
            worker.log.info("Autorestarting worker after current request.")
            worker.alive = False
        if not worker.alive or not worker.cfg.keepalive:
            resp.force_close()
        respiter = worker.wsgi(environ, resp.start_response)
        try:
            for item in respiter:
                resp.write(item)
            resp.close()
        finally:
            worker.log.access(resp, req, environ, datetime.now() - started)
            if hasattr(respiter, "close"):
                respiter.close()
        return bytes(answer.data), read_exactly(parser, pieces) and not resp.should_close()
    except (http_errors.NoMoreData, StopIteration):
        # gunicorn's parser wanted more than the loop framed as this request: nothing to serve.
        return json_answer(400, "bad_request", "the request's length could not be read"), False
    except Exception as exc:
        answer.data.clear()  # nothing has left: a half-written answer becomes a whole error answer
        worker.handle_error(req, answer, client, exc)
        return bytes(answer.data), False
