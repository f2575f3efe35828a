"""receiver.platform.serving: no peer can stall acknowledgements.

The Procfile's web command runs against hostile peers (tests/peers.py, a seeded mix of every
misbehaviour per connection phase, in a process of their own) while an honest client sends signed
callbacks; `pytest -s -m slow tests/platform/test_serving.py` prints the figures. How the loop frames
requests is tests/platform/test_framing.py; the lanes that run them, tests/platform/test_lanes.py.
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
from sqlalchemy import create_engine, text

from tests import load
from tests.servers import ROOT, children_of, gunicorn
from tests.stack import receiver_env


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
    server, peers = started_web(sqlite_url, tmp_path), None
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
        if peers is not None and peers.poll() is None:  # the test failed before they finished: not left behind
            peers.kill()
            peers.communicate(timeout=10)
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
