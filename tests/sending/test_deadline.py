"""receiver.sending.deadline through MessagesClient: one total deadline over the whole call, whatever the peer does
in each phase of its answer. The peer is a raw socket server on loopback; the simulator's own trickle is in
test_delivery.py and test_simulator.py."""
from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.sending.client import MessagesClient, SendError
from receiver.sending.deadline import Deadline

DEADLINE = 0.6
BODY = {"channel": "sms", "message_type": "text", "to": "447700900123", "from": "AcmeShop", "text": "Hi",
        "client_ref": "order-48213"}
ACCEPTED = b'{"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"}'
HEAD = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"

# What the peer does once it has read the request: each a way to hold a call that a per-recv timeout lets run.
PHASES = ("never_answer", "dribble_status_line", "dribble_headers", "dribble_body", "half_body")


class Peer:
    """A Messages API that reads each request, then answers as `phase` says."""

    def __init__(self, phase: str, pause: float = 0.05):
        self.phase, self.pause = phase, pause
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                self._play(conn, HEAD % len(ACCEPTED))
            except OSError:
                pass

    def _play(self, conn: socket.socket, head: bytes) -> None:
        phase = self.phase
        if phase == "never_answer":
            self.stopping.wait(10)
        elif phase in ("dribble_status_line", "dribble_headers"):
            start = 0 if phase == "dribble_status_line" else head.index(b"\r\n") + 2
            conn.sendall(head[:start])
            self._dribble(conn, head[start:] + ACCEPTED)
        elif phase == "dribble_body":
            conn.sendall(head)
            self._dribble(conn, ACCEPTED)
        elif phase == "endless_body":  # chunked, and the chunks never end
            conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            while not self.stopping.is_set():
                conn.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
        elif phase == "half_body":
            conn.sendall(head + ACCEPTED[:10])
            self.stopping.wait(10)

    def _dribble(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if self.stopping.wait(self.pause):
                return
            conn.sendall(data[i:i + 1])

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


@pytest.fixture
def peers():
    made = []

    def make(phase: str, pause: float = 0.05) -> Peer:
        made.append(Peer(phase, pause))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def timed_send(url: str, total: float = DEADLINE) -> tuple[SendError, float]:
    # The per-recv read timeout is far longer than the deadline: only the deadline can end these calls.
    client = MessagesClient(api_key="k", api_secret="s", api_base=url, read_timeout=30.0, total_timeout=total)
    started = time.monotonic()
    with pytest.raises(SendError) as caught:
        client.send_message(BODY)
    client.close()
    return caught.value, time.monotonic() - started


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(phase=st.sampled_from(PHASES), pause=st.floats(0.05, 0.3))
def test_no_answer_holds_a_call_past_its_deadline_and_each_is_unknown(peers, phase, pause):
    error, took = timed_send(peers(phase, pause).url)

    assert error.kind == "unknown"  # the request had left: it may have been accepted
    assert "within 0.6s" in str(error) and "client_ref" in str(error)
    assert DEADLINE - 0.05 <= took < DEADLINE + 0.5


def test_a_huge_answer_is_read_no_further_than_its_cap_and_is_unknown(peers):
    peer = peers("endless_body")

    error, took = timed_send(peer.url, total=5.0)

    # Cut at the cap: long before the deadline, with nothing readable in it.
    assert error.kind == "unknown" and took < 2.0
    assert "without a message_uuid" in str(error)


def test_a_call_that_beats_its_deadline_keeps_its_connection_for_the_next(peers):
    peer = peers("dribble_body", pause=0.001)
    client = MessagesClient(api_key="k", api_secret="s", api_base=peer.url, total_timeout=5.0)

    assert client.send_message(BODY).message_uuid == "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"


def test_a_deadline_that_passes_before_any_connection_says_nothing_was_sent():
    # A listener whose backlog is full: connect() hangs until the deadline (or the connect timeout).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        try:
            client = MessagesClient(api_key="k", api_secret="s", api_base=url, connect_timeout=30.0,
                                    total_timeout=DEADLINE)
            started = time.monotonic()
            with pytest.raises(SendError) as caught:
                client.send_message(BODY)
            took = time.monotonic() - started
        finally:
            for filler in fillers:
                filler.close()
    if caught.value.kind != "retry":  # the kernel took the connection into its queue after all
        pytest.skip("this kernel accepts connections past a full backlog")
    assert "not sent" in str(caught.value) and took < DEADLINE + 0.5


def test_a_deadline_never_shuts_a_socket_after_its_call_ended():
    left, right = socket.socketpair()
    with left, right:
        with Deadline(0.05) as deadline:
            deadline.watch(left)
        time.sleep(0.15)
        left.sendall(b"still open")
        assert right.recv(16) == b"still open" and not deadline.expired
