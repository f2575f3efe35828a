"""Where an HTTP/1.1 request ends, read from its bytes as they arrive, and the JSON answers that refuse one.

The serving loop (receiver.platform.serving) keeps a request in memory until it is whole, so it must know where
the request ends without gunicorn's parser, which blocks. It reads only what decides that: the header
block's end, Content-Length or a chunked body's framing; gunicorn's parser reads the whole request
later, in a thread, and a request the two read differently ends its connection. Everything here is
linear in the bytes fed, whatever their shape: a peer that dribbles or pads costs no rescans.
"""
from __future__ import annotations

import json
import re

from gunicorn.http import errors as http_errors

MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNK_LINE = 1024  # a chunk-size line, extensions included
MAX_CHUNKS = 4096  # chunks in one body: each costs gunicorn's parser a few microseconds of a thread
MAX_LENGTH_DIGITS = 18  # a longer Content-Length is over any limit (and past int()'s digit limit)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")  # gunicorn's rule: hex digits, nothing else

Refusal = tuple[int, str, str]  # (status, error code, message)
TOO_LARGE = (431, "request_header_fields_too_large", "the request line and headers are too large")


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
        self._chunks = 0
        self._trailer_scan = 0  # chunked: where the search for the end of the trailers goes on from

    def feed(self, data: bytes = b"") -> Refusal | bool:
        """Add bytes; True when the request is complete, False while more is due, or (status,
        code, message) for a request refused before any thread sees it."""
        self.data += data
        if self.body_start is None:
            end = self.data.find(b"\r\n\r\n", self._head_scan)
            if end < 0:
                if len(self.data) > MAX_HEADER_BYTES:
                    return TOO_LARGE
                self._head_scan = max(0, len(self.data) - 3)
                return False
            if end > MAX_HEADER_BYTES:
                return TOO_LARGE
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

    def _read_headers(self, head: bytes) -> Refusal | None:
        # Only three headers decide how much is still to come; gunicorn's parser reads the rest.
        if head.count(b"\r\n") > self.max_fields:  # one line is the request line
            return 431, "request_header_fields_too_large", f"more than {self.max_fields} header fields"
        lowered = head.lower()
        self.expects_continue = _header(lowered, b"expect") == b"100-continue"
        if b"chunked" in _header(lowered, b"transfer-encoding"):
            self.length = None
        elif (length := _header(lowered, b"content-length") or b"0").isdigit():
            if len(length.lstrip(b"0")) > MAX_LENGTH_DIGITS or int(length) > self.max_body:
                return 413, "request_entity_too_large", f"the body is larger than {self.max_body} bytes"
            self.length = int(length)
        else:
            self.length = 0  # malformed: gunicorn's parser answers 400 once a thread reads it
        return None

    def _chunked_complete(self) -> Refusal | bool:
        while True:
            line_end = self.data.find(b"\r\n", self._scan, self._scan + MAX_CHUNK_LINE)
            if line_end < 0:
                if len(self.data) - self._scan >= MAX_CHUNK_LINE:
                    return self._unreadable()
                return False
            size_text, semicolon, _ = bytes(self.data[self._scan:line_end]).partition(b";")
            if semicolon:  # white space may only come before an extension
                size_text = size_text.rstrip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_text):
                return self._unreadable()
            size = int(size_text, 16)
            if size == 0:  # the last chunk; complete once the (optional) trailers end
                if self.data[line_end + 2:line_end + 4] == b"\r\n":
                    self.end = line_end + 4
                    return True
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
            if self._chunks >= MAX_CHUNKS:
                return 400, "bad_request", f"the body is cut into more than {MAX_CHUNKS} chunks"
            next_line = line_end + 2 + size + 2
            if len(self.data) < next_line:
                return False
            if self.data[next_line - 2:next_line] != b"\r\n":
                return self._unreadable()
            self._decoded += size
            self._chunks += 1
            self._scan = next_line

    def _unreadable(self) -> bool:
        """Not framed as HTTP/1.1 says: the request ends here, and gunicorn's parser answers 400."""
        self.end = len(self.data)
        return True

    def request_bytes(self) -> bytes:
        """The request, without an `Expect: 100-continue` (its body is here: no thread must answer 100)."""
        if not self.expects_continue:
            return bytes(self.data[:self.end])
        head, body = bytes(self.data[:self.body_start]), bytes(self.data[self.body_start:self.end])
        line, *fields = head.split(b"\r\n")
        kept = [f for f in fields if not (f.lower().startswith(b"expect:")
                                          and f[7:].strip(b" \t").lower() == b"100-continue")]
        return b"\r\n".join([line, *kept]) + body

    def rest(self) -> bytes:
        """What arrived after this request: the start of the next one."""
        return bytes(self.data[self.end:])

    def urgent(self) -> bool:
        """A webhook's request, or the liveness probe (its line, as it arrived): served before any other."""
        return self.data.startswith((b"POST /webhooks/", b"GET /webhooks/", b"GET /healthz "))


def _header(lowered_head: bytes, name: bytes) -> bytes:
    """The first value of header `name` in a lowercased header block (b"" when absent)."""
    at = lowered_head.find(b"\r\n" + name + b":")
    if at < 0:
        return b""
    start = at + len(name) + 3
    end = lowered_head.find(b"\r\n", start)
    return lowered_head[start:end if end >= 0 else len(lowered_head)].strip(b" \t")


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


def status_of(exc: BaseException) -> tuple[int, str]:
    """The answer to a request gunicorn's parser refused with `exc`."""
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
