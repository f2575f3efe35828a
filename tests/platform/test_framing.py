"""receiver.platform.framing: the serving loop finds where each request ends from its bytes alone, exactly
where gunicorn's own parser does, for generated requests cut at generated places; what it refuses, it
refuses from the bytes; and the thread reading the request it hands on (receiver.platform.lanes.parse)
reads exactly those bytes."""
from __future__ import annotations

import pytest
from gunicorn.config import Config
from gunicorn.http import RequestParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.platform.framing import MAX_CHUNKS, MAX_HEADER_BYTES, IncompleteRequest
from receiver.platform.lanes import parse, read_exactly
from tests.conftest import examples

MAX_BODY = 4096

header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "expect", "connection") and n[0] != "-")
header_values = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30)


@st.composite
def one_request(draw) -> tuple[bytes, bytes]:
    """(the request's bytes, its decoded body): Content-Length or chunked, with generated headers."""
    method = draw(st.sampled_from(["GET", "POST", "PUT"]))
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=8))
    body = draw(st.binary(max_size=300))
    head = f"{method} /webhooks/message-status HTTP/1.1\r\nHost: receiver\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    if draw(st.booleans()) and body:
        sizes = draw(st.lists(st.integers(1, 64), min_size=1, max_size=10))
        chunks, at = [], 0
        for size in sizes:
            if at >= len(body):
                break
            piece = body[at:at + size]
            extension = draw(st.sampled_from(["", ";name=value"]))
            chunks.append(f"{len(piece):x}{extension}\r\n".encode() + piece + b"\r\n")
            at += size
        body = body[:at]
        trailer = draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"]))
        data = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"".join(chunks) + b"0\r\n" + trailer + b"\r\n"
        return data, body
    if body or method != "GET":
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body, body


def gunicorn_reads(data: bytes) -> list[bytes]:
    """The bodies gunicorn's parser finds in `data`, one per request, as a thread would read them."""
    parser = RequestParser(Config(), [data], ("127.0.0.1", 1))
    bodies = []
    for request in parser:
        bodies.append(request.body.read())
    return bodies


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(one_request(), min_size=1, max_size=5), st.data())
def test_the_loop_frames_pipelined_requests_where_gunicorn_does(requests_, data):
    """Pipelined requests cut into generated pieces: the loop finds each whole request where gunicorn's
    parser does, and hands on exactly its bytes (the rest is the next request)."""
    stream = b"".join(r for r, _ in requests_)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    framed, incoming = [], IncompleteRequest(MAX_BODY, 100)
    for piece in pieces:
        done = incoming.feed(piece)
        while done is True:
            framed.append(incoming.request_bytes())
            incoming = IncompleteRequest(MAX_BODY, 100, incoming.rest())
            done = incoming.feed() if incoming.data else False
        assert done is False, done
    assert not incoming.data
    assert framed == [r for r, _ in requests_]
    assert [gunicorn_reads(one) for one in framed] == [[body] for _, body in requests_]
    for one, (_, body) in zip(framed, requests_):  # as a thread reads it: exactly these bytes, so kept alive
        parser, pieces, request = parse(Config(), one, ("127.0.0.1", 1))
        assert request.body.read() == body
        assert read_exactly(parser, pieces)


@pytest.mark.parametrize("data", [
    b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello",  # fewer bytes than it says
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",  # no last chunk
])
def test_a_request_the_parser_finds_short_is_never_kept_alive(data):
    try:
        parser, pieces, request = parse(Config(), data, ("127.0.0.1", 1))
        request.body.read()
    except Exception:
        return  # refused: the connection ends with the error answer
    assert not read_exactly(parser, pieces)


@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEADER_BYTES + 10), 431),
    (b"POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"801\r\n" + b"a" * 2049 + b"\r\n801\r\n", 413),
    (b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 413),  # past int()'s digit limit
])
def test_what_the_loop_refuses_from_the_bytes_alone(data, status):
    assert IncompleteRequest(MAX_BODY, 100).feed(data)[0] == status


def test_a_body_cut_into_too_many_chunks_is_refused():
    """gunicorn's parser spends a few microseconds of a thread on each chunk: a body of a million one-byte
    chunks would hold a thread for seconds."""
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\na\r\n" * (MAX_CHUNKS + 1)
    assert IncompleteRequest(10 * MAX_CHUNKS, 100).feed(data)[0] == 400


@pytest.mark.parametrize("size_line", [b"-6", b"+5", b"0x5", b" 5", b"5_0", b"", b"1" * 17, b"f" * 2000])
def test_a_chunk_size_gunicorn_would_refuse_ends_the_request_there(size_line):
    """Ended where the loop stopped understanding it: gunicorn's parser then answers 400 and the connection
    closes. (A negative size once sent the scan backwards, forever.)"""
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\nhello\r\n0\r\n\r\n"
    incoming = IncompleteRequest(MAX_BODY, 100)
    assert incoming.feed(data) is True and incoming.end == len(data)
    with pytest.raises(Exception):
        parser, _, request = parse(Config(), incoming.request_bytes(), ("127.0.0.1", 1))
        request.body.read()


def test_chunk_data_not_followed_by_its_crlf_ends_the_request_there():
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
    incoming = IncompleteRequest(MAX_BODY, 100)
    assert incoming.feed(data) is True and incoming.end == len(data)


@given(st.binary(max_size=400), st.data())
@settings(max_examples=examples(500), deadline=None)
def test_any_bytes_in_any_pieces_end_in_an_answer_never_an_exception(junk, data):
    """Whatever arrives, feeding it ends in True, False or a refusal, and never raises or loops."""
    head = data.draw(st.sampled_from([b"", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                                      b"POST / HTTP/1.1\r\nContent-Length: 7\r\n\r\n"]))
    stream = head + junk
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    incoming = IncompleteRequest(MAX_BODY, 100)
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        done = incoming.feed(stream[a:b])
        assert done is True or done is False or done[0] in (400, 408, 413, 431)
        if done is not False:
            break


def test_an_expect_100_continue_is_not_handed_to_the_thread():
    incoming = IncompleteRequest(MAX_BODY, 100)
    assert incoming.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi") is True
    assert incoming.request_bytes() == b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"


def test_a_request_line_that_looks_like_an_expect_header_stays():
    incoming = IncompleteRequest(MAX_BODY, 100)
    data = b"Expect: x\r\nExpect: 100-continue\r\nPOST /webhooks/x HTTP/1.1\r\n\r\n"
    assert incoming.feed(data) is True
    assert incoming.request_bytes().startswith(b"Expect: x\r\n")  # gunicorn refuses that request line
