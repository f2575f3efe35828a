"""receiver.platform.serving: no peer can stall acknowledgements.

Unit tests check the loop's framing of requests against gunicorn's own parser, for generated
requests cut at generated places. The slow ones run the Procfile's web command against hostile
peers (tests/peers.py, a seeded mix of every misbehaviour per connection phase, in a process of
their own) while an honest client sends signed callbacks; `pytest -s -m slow tests/platform/test_serving.py`
prints the figures.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from gunicorn.config import Config
from gunicorn.http import RequestParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from receiver.platform.framing import MAX_CHUNKS, MAX_HEADER_BYTES, IncompleteRequest
from receiver.platform.lanes import parse, read_exactly
from tests import load
from tests.servers import ROOT, children_of, gunicorn
from tests.stack import receiver_env

MAX_BODY = 4096

# -- framing: the loop and gunicorn's parser agree on where each request ends ---------------------------

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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
@settings(max_examples=500, deadline=None)
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


# -- against the Procfile's web command ---------------------------------------------------------------------

class Honest:
    """Signed callbacks at a steady pace, each on a fresh connection (or, `reuse`, on one kept alive as a
    pooling sender would), each one's latency and answer kept."""

    def __init__(self, url: str, seconds: float, interval: float, reuse: bool = False):
        self.url, self.seconds, self.interval = url, seconds, interval
        self.session = requests.Session() if reuse else None
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> "Honest":
        callbacks = load.build(int(self.seconds / self.interval) + 1)
        end = time.monotonic() + self.seconds
        send = self.session.request if self.session else requests.request
        for callback in callbacks:
            if time.monotonic() >= end:
                break
            started = time.perf_counter()
            try:
                headers = callback.headers if self.session else dict(callback.headers, Connection="close")
                answer = send(callback.method, self.url + callback.path, data=callback.body, headers=headers,
                              timeout=10)
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code} {answer.text[:100]}")
            except requests.RequestException as exc:
                self.failures.append(type(exc).__name__)
            self.latencies.append(time.perf_counter() - started)
            time.sleep(max(0.0, self.interval - (time.perf_counter() - started)))
        return self

    def figures(self) -> dict:
        ordered = sorted(self.latencies)
        return {"sent": len(ordered), "failed": len(self.failures),
                "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
                "max_ms": round(ordered[-1] * 1000, 1)}


class Heartbeats:
    """Samples the newest worker heartbeat every half second: how old it ever got."""

    def __init__(self, database_url: str):
        self.engine = create_engine(database_url)
        self.oldest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self.engine.dispose()

    def _run(self):
        while not self._stop.wait(0.5):
            with self.engine.connect() as conn:
                newest = conn.execute(text("SELECT max(seen_at) FROM workers")).scalar()
            if newest is not None:
                self.oldest = max(self.oldest, time.time() - newest)


def hostile(port: int, count: int, seed: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.peers", "--port", str(port), "--count", str(count),
                             "--seed", str(seed), "--seconds", str(seconds)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)


def settled(peers: subprocess.Popen, timeout: float) -> dict:
    try:
        out, _ = peers.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        peers.kill()
        out, _ = peers.communicate(timeout=10)
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def started_web(sqlite_url, tmp_path):
    env = dict(receiver_env(sqlite_url, tmp_path), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    return gunicorn(env, log_path=tmp_path / "gunicorn.log").start(timeout=30)


def stored_events(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM events")).scalar()
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("seed, count", [(1, 50), (2, 200), (3, 500)])
def test_no_mix_of_hostile_peers_stalls_signed_callbacks(seed, count, sqlite_url, tmp_path):
    """50 to 500 peers misbehaving in every phase, against the Procfile's web command: every signed callback
    is answered 200, the slowest under 1 s and the p99 under 250 ms; no worker is killed for timing out,
    and the worker's heartbeat keeps beating."""
    server = started_web(sqlite_url, tmp_path)
    try:
        peers = hostile(server.port, count, seed, seconds=14)
        time.sleep(1.5)  # let them connect and settle into what they do
        with Heartbeats(sqlite_url) as beats:
            honest = Honest(server.url, seconds=12, interval=0.05).run()
        chosen = settled(peers, timeout=30)
        figures = honest.figures()
        log = (tmp_path / "gunicorn.log").read_text(errors="replace")
        print(f"\n[hostile peers seed={seed} n={count}] honest: {figures}; oldest heartbeat "
              f"{beats.oldest:.1f} s; peers: {chosen}")
        assert not honest.failures, honest.failures[:5]
        assert figures["max_ms"] < 1000 and figures["p99_ms"] < 250, figures
        assert "WORKER TIMEOUT" not in log
        assert beats.oldest < 11, "the worker's heartbeat stopped"  # it beats every 5 s
        assert stored_events(sqlite_url) == figures["sent"]
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("ending", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /healthz HTTP/1.0\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",  # refused 431 by gunicorn's limit
], ids=["connection-close", "http-1.0", "431"])
def test_peers_that_end_a_request_and_linger_stall_nothing(ending, sqlite_url, tmp_path):
    """30 peers each send one request that ends the connection, then neither read their answer nor close:
    signed callbacks every 100 ms for 12 s are all answered, the slowest under 1 s."""
    server = started_web(sqlite_url, tmp_path)
    lingering = []
    try:
        for _ in range(30):
            peer = socket.socket()
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            peer.connect(("127.0.0.1", server.port))
            peer.sendall(ending)
            lingering.append(peer)
        honest = Honest(server.url, seconds=12, interval=0.1).run()
        figures = honest.figures()
        print(f"\n[lingering peers] {figures}")
        assert not honest.failures, honest.failures[:5]
        assert figures["max_ms"] < 1000, figures
        assert "WORKER TIMEOUT" not in (tmp_path / "gunicorn.log").read_text(errors="replace")
    finally:
        for peer in lingering:
            peer.close()
        server.stop()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
@pytest.mark.parametrize("limit, peers, reuse", [
    ("worker-connections", "slowloris", False),
    ("worker-connections", "silent", True),
    ("file-descriptors", "slowloris", False),
])
def test_peers_past_the_connection_limit_do_not_turn_callbacks_away(limit, peers, reuse, sqlite_url, tmp_path):
    """More connections than a process may hold (its worker_connections, or its file descriptors), which
    send one header line or nothing, and keep coming: the quietest of them are given up to make room, never
    the callback just accepted nor a sender's kept-alive connection; no process holds more than its limit."""
    env = dict(receiver_env(sqlite_url, tmp_path), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    server = gunicorn(env, log_path=tmp_path / "gunicorn.log")
    if limit == "worker-connections":
        server.env["GUNICORN_CMD_ARGS"] = "--worker-connections 100"
    else:  # 384 descriptors for connections in each process, a hard limit it cannot raise
        server.args = ["bash", "-c", 'ulimit -Sn 512 && ulimit -Hn 512 && exec "$@"', "gunicorn", *server.args]
    server.start(timeout=30)
    held = []
    try:
        stop, most_fds = threading.Event(), []

        def keep_coming():  # 200 more a second, each replacing the oldest held
            while not stop.wait(0.005):
                peer = socket.socket()
                peer.setblocking(False)
                peer.connect_ex(("127.0.0.1", server.port))
                held.append(peer)
                if peer is not None and peers == "slowloris":
                    time.sleep(0.001)
                    try:
                        peer.send(b"POST /webhooks/message-status HTTP/1.1\r\nHost: x\r\n")  # and nothing more
                    except OSError:
                        pass
                if len(held) > 1200:
                    held.pop(0).close()
                most_fds.append(max(open_fds(pid) for pid in children_of(server.proc.pid)))

        for _ in range(1000 if limit == "file-descriptors" else 300):
            peer = socket.socket()
            peer.setblocking(False)
            peer.connect_ex(("127.0.0.1", server.port))
            held.append(peer)
        time.sleep(0.5)
        for peer in held if peers == "slowloris" else ():
            try:
                peer.send(b"POST /webhooks/message-status HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            except OSError:
                pass
        coming = threading.Thread(target=keep_coming, daemon=True)
        coming.start()
        try:
            honest = Honest(server.url, seconds=6, interval=0.05, reuse=reuse).run()
        finally:
            stop.set()
            coming.join(timeout=5)
        figures = honest.figures()
        print(f"\n[{peers} past the {limit} limit, {'kept alive' if reuse else 'fresh'}] {figures}; "
              f"most descriptors in a process: {max(most_fds)}")
        assert not honest.failures, honest.failures[:5]
        assert figures["max_ms"] < 1000, figures
        assert max(most_fds) <= (100 if limit == "worker-connections" else 384) + 128, "a limit drifted up"
    finally:
        for peer in held:
            peer.close()
        server.stop()


@pytest.mark.slow
def test_requests_that_arrived_before_a_stop_are_answered(sqlite_url, tmp_path):
    """SIGTERM to the workers while signed callbacks are in flight on fresh connections: each is answered
    200 (the stopping workers finish theirs, a connection whose request is in the kernel's buffer
    included; gunicorn's new workers take the rest), none is reset."""
    server = started_web(sqlite_url, tmp_path)
    callbacks = load.build(40)
    answers: dict[int, object] = {}

    def one(n, callback):
        try:
            answers[n] = requests.request(callback.method, server.url + callback.path, data=callback.body,
                                          headers=dict(callback.headers, Connection="close"), timeout=15).status_code
        except requests.RequestException as exc:
            answers[n] = f"{type(exc).__name__}: {exc}"[:120]

    try:
        senders = [threading.Thread(target=one, args=(n, c)) for n, c in enumerate(callbacks)]
        for n, sender in enumerate(senders):
            sender.start()
            if n == len(senders) // 2:
                for pid in children_of(server.proc.pid):  # the workers, as gunicorn's master does on a reload
                    os.kill(pid, signal.SIGTERM)
        for sender in senders:
            sender.join(timeout=30)
    finally:
        server.stop()
    print(f"\n[stop] {sum(a == 200 for a in answers.values())} of {len(callbacks)} answered 200")
    assert [n for n in range(len(callbacks)) if answers.get(n) != 200] == [], answers


# -- the lanes: webhooks first, other requests on few threads, neither piles up ------------------------------

def test_webhooks_are_run_before_other_requests_and_others_take_few_threads():
    from receiver.platform.lanes import Lanes

    lanes = Lanes(4)
    gate, order, running, most = threading.Event(), [], [], []
    lock = threading.Lock()

    def job(name):
        def run():
            with lock:
                running.append(name)
                most.append(sum(1 for n in running if n.startswith("other")))
            gate.wait(5)
            with lock:
                running.remove(name)
                order.append(name)
        return run

    done = threading.Semaphore(0)
    for n in range(6):
        lanes.submit(False, job(f"other-{n}"), lambda *_: done.release())
    time.sleep(0.2)  # two others run; the rest wait for them
    for n in range(3):
        lanes.submit(True, job(f"webhook-{n}"), lambda *_: done.release())
    time.sleep(0.2)
    assert sorted(running) == ["other-0", "other-1", "webhook-0", "webhook-1"]  # others never take a third thread
    gate.set()
    for _ in range(9):
        assert done.acquire(timeout=5)
    lanes.stop()
    assert max(most) == 2
    assert order.index("webhook-2") < order.index("other-3")  # a waiting webhook goes before waiting others


def test_a_lane_says_it_is_full_before_a_flood_piles_up():
    from receiver.platform.lanes import OTHERS_QUEUED, URGENT_QUEUED, Lanes

    lanes = Lanes(2)
    gate = threading.Event()
    for _ in range(2 + lanes.max_others * OTHERS_QUEUED):
        lanes.submit(False, lambda: gate.wait(5), lambda *_: None)
    time.sleep(0.1)
    assert lanes.full(False) and not lanes.full(True)
    for _ in range(2 * URGENT_QUEUED + 2):
        lanes.submit(True, lambda: gate.wait(5), lambda *_: None)
    assert lanes.full(True)
    gate.set()
    lanes.stop()


def test_a_forged_sms_callback_too_large_to_be_one_is_refused_before_it_is_read(client):
    """Reading an SMS API callback comes before its signature can be checked: one far larger than Vonage
    sends (a megabyte of parameters costs a thread a quarter of a second) is refused unread."""
    many = "&".join(f"p{n}=v" for n in range(150))
    assert client.post("/webhooks/inbound-sms", data=many,
                       content_type="application/x-www-form-urlencoded").status_code == 413
    assert client.get(f"/webhooks/inbound-sms?{many}").status_code == 413
    large = b"text=" + b"a" * 20_000
    assert client.post("/webhooks/inbound-sms", data=large,
                       content_type="application/x-www-form-urlencoded").status_code == 413
    members = json.dumps({f"p{n}": "v" for n in range(150)})
    assert client.post("/webhooks/inbound-sms", data=members, content_type="application/json").status_code == 413
