"""Nothing a caller sends stalls the account's callback queue, against real gunicorn processes.

Poison callbacks among normal ones through the Procfile's web command; idle and slowloris sockets
beside signed callbacks; kill -9 of every process, then a restart; a handler slower than its lease;
gunicorn's own error answers. `pytest -s -m slow tests/system/test_stalls.py` prints the figures.
"""
from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter

import pytest
import requests

from devkit import samples
from receiver.webhooks.signatures import sign_jwt
from tests import load
from tests.conftest import ADMIN_TOKEN, API_KEY, PATHS, SECRET, count_states
from tests.poison import MESSAGES_POISON, SMS_POISON
from tests.servers import Server, children_of, free_port, gunicorn
from tests.stack import Stack, assert_every_callback_kept_and_dispatched, dispatches, receiver_env, wait_until_settled

pytestmark = pytest.mark.slow

BOTH = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def poison_callbacks() -> list[load.Callback]:
    found = []
    for _, kind, body in MESSAGES_POISON:
        headers = {"Authorization": f"Bearer {sign_jwt(body, SECRET, api_key=API_KEY)}",
                   "Content-Type": "application/json"}
        found.append(load.Callback(kind, "POST", PATHS[kind], body, headers, "poison", None))
    for _, kind, params in SMS_POISON:
        if "\x00" not in "".join(params.values()):
            found.append(load.sms_callback(kind, params, "GET"))
    return found


@pytest.mark.parametrize("database", BOTH, indirect=True)
def test_poison_among_normal_callbacks_is_all_stored_and_the_normal_ones_all_processed(database, request, tmp_path,
                                                                                       stack, engine_for):
    label = f"poison/{request.node.callspec.id}"
    server = stack.gunicorn(receiver_env(database, tmp_path))  # the default: a worker thread in each process
    normal, poison = load.build(400), poison_callbacks()
    mixed = normal + poison
    order = list(range(len(mixed)))
    random.Random(7).shuffle(order)
    report = load.send(server.url, [mixed[i] for i in order], threads=4, deadline=120)
    assert len(report.acknowledged) == len(mixed), report.summary()

    engine = engine_for(database)
    states = wait_until_settled(engine, len(mixed))
    assert states == {"done": len(normal), "invalid": len(poison)}, states
    assert len(dispatches(engine)) == len(normal)
    ready = requests.get(server.url + "/readyz", timeout=5)
    assert ready.status_code == 200, ready.text  # both processes' worker threads still run
    print(f"\n[{label}] {report.summary()}; {len(poison)} poison kept invalid, {len(normal)} processed; {states}")


def test_idle_and_slow_clients_do_not_delay_acknowledgements(sqlite_url, tmp_path):
    """The Procfile's web command as it is, in front of 200 idle sockets and 50 that send their headers a
    line every half second: every signed callback is acknowledged well within a second."""
    env = receiver_env(sqlite_url, tmp_path)
    server = gunicorn(env, log_path=tmp_path / "gunicorn.log").start(timeout=30)
    idle, slow = [], []
    try:
        host, port = "127.0.0.1", server.port
        idle = [socket.create_connection((host, port)) for _ in range(200)]
        slow = [socket.create_connection((host, port)) for _ in range(50)]
        for s in slow:
            s.sendall(b"POST /webhooks/message-status HTTP/1.1\r\nHost: x\r\n")
        stop = threading.Event()

        def trickle():
            while not stop.wait(0.5):
                for s in slow:
                    try:
                        s.sendall(b"X-Slow: 1\r\n")
                    except OSError:
                        pass

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        time.sleep(1.0)
        latencies = []
        with requests.Session() as session:
            for _ in range(50):
                body = json.dumps(samples.message_status("delivered")).encode()
                headers = {"Authorization": f"Bearer {sign_jwt(body, SECRET, api_key=API_KEY)}",
                           "Content-Type": "application/json"}
                started = time.perf_counter()
                response = session.post(server.url + PATHS["message-status"], data=body, headers=headers, timeout=15)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
        stop.set()
        trickler.join(timeout=5)
        latencies.sort()
        print(f"\n[slow clients] 200 idle + 50 slowloris sockets open: 50 acknowledgements, p50 "
              f"{latencies[25] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
        assert latencies[-1] < 1.0
    finally:
        for s in idle + slow:
            s.close()
        server.stop()


@pytest.mark.parametrize("database", BOTH, indirect=True)
def test_after_kill_9_of_every_process_a_restart_processes_everything_within_30s(database, request, tmp_path,
                                                                               engine_for):
    """LEASE_SECONDS stays at its 300 s default: what the killed workers held comes back because
    their heartbeat stopped and their processes are gone, not because a lease ran out."""
    label = f"kill-all/{request.node.callspec.id}"
    env = receiver_env(database, tmp_path, LEASE_SECONDS="300", TEST_HANDLER_SECONDS="0.05")
    env.pop("WORKER_POLL_SECONDS", None)
    first = Stack(tmp_path)
    server = first.gunicorn(env)
    worker = first.worker(dict(env, WORKER_IN_WEB="false"))
    deliveries = load.build(600)
    report = load.send(server.url, deliveries, threads=4, deadline=120)
    engine = engine_for(database)
    assert count_states(engine).get("processing"), "the workers should hold claims when they are killed"
    for process in (server, worker):
        process.kill()  # the whole process group: gunicorn's master, its workers and their threads
    killed_at = time.monotonic()
    left = sum(n for state, n in count_states(engine).items() if state != "done")

    again = Stack(tmp_path)
    try:
        again.gunicorn(dict(env, TEST_HANDLER_SECONDS="0"))
        wait_until_settled(engine, len(deliveries), timeout=60)
        recovered = time.monotonic() - killed_at
        assert_every_callback_kept_and_dispatched(engine, report, deliveries, label)
        print(f"\n[{label}] {report.summary()}; killed with {left} unfinished; all processed "
              f"{recovered:.1f} s after the kill (restart included)")
        assert recovered < 30
    finally:
        again.stop_all()
        first.stop_all()


def test_a_handler_slower_than_its_lease_runs_once(sqlite_url, tmp_path, stack, engine_for):
    env = receiver_env(sqlite_url, tmp_path, WORKER_IN_WEB="false", LEASE_SECONDS="2", TEST_HANDLER_SECONDS="6")
    server = stack.gunicorn(env)
    for _ in range(2):
        stack.worker(env)
    callback = load.build(1)[0]
    report = load.send(server.url, [callback], threads=1, deadline=30)
    assert report.acknowledged == [0]
    engine = engine_for(sqlite_url)
    wait_until_settled(engine, 1, timeout=40)
    found = dispatches(engine)
    assert [len(pids) for pids in found.values()] == [1], f"dispatched by {found}"


def raw(server: Server, data: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_gunicorns_own_answers_are_json(sqlite_url, tmp_path):
    env = dict(receiver_env(sqlite_url, tmp_path), MAX_CONTENT_LENGTH="2000")
    server = gunicorn(env, log_path=tmp_path / "gunicorn.log").start(timeout=30)
    try:
        cases = {
            "request line too long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
            "not HTTP": (b"HELLO THERE\r\n\r\n", 400),
            "a header past gunicorn's limit": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 9000 + b"\r\n\r\n",
                                               431),
            "headers past 64 KiB": (b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 8000 + b"\r\n", 431),
            "a Content-Length over the limit": (b"POST /webhooks/message-status HTTP/1.1\r\nHost: x\r\n"
                                                b"Content-Length: 5000\r\n\r\n", 413),
            "a chunked body over the limit": (b"POST /webhooks/message-status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:"
                                              b" chunked\r\n\r\n" + b"400\r\n" + b"z" * 1024 + b"\r\n" + b"400\r\n"
                                              + b"z" * 1024 + b"\r\n0\r\n\r\n", 413),
        }
        for what, (data, expected) in cases.items():
            code, body = raw(server, data)
            assert (code, set(body)) == (expected, {"error", "message"}), what
    finally:
        server.stop()


def test_a_connection_that_sends_nothing_is_closed_without_a_thread(sqlite_url, tmp_path):
    env = receiver_env(sqlite_url, tmp_path)
    server = gunicorn(dict(env, WEB_THREADS="1"), workers=1, log_path=tmp_path / "gunicorn.log").start(timeout=30)
    try:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        # One thread in one process, five silent connections: a request still gets through at once.
        assert requests.get(server.url + "/healthz", timeout=2).status_code == 200
        for s in held:
            s.settimeout(10)
            assert s.recv(1) == b""  # closed by the server after keepalive seconds, unanswered
            s.close()
        assert children_of(server.proc.pid)
    finally:
        server.stop()



def test_kill_9_of_the_sending_worker_loses_no_message_and_sends_none_twice(sqlite_url, tmp_path, stack, engine_for):
    """200 messages queued, the worker that sends them killed mid-way and restarted: every message is
    sent, and none that had been recorded as sent is sent again."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from sqlalchemy import select

    from devkit.simulator import running_simulator
    from receiver.sending.keys import public_key_pem
    from receiver.storage.schema import outbox

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    (tmp_path / "private.key").write_text(key)
    app_id = "3e1f2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b"
    port = free_port()
    with running_simulator(application_id=app_id, public_key=public_key_pem(key), signature_secret=SECRET,
                           api_key=API_KEY, receiver_url=f"http://127.0.0.1:{port}", callback_delay=0.05,
                           reject_share=0, duplicate_share=0, out_of_order_share=0) as vonage:
        env = receiver_env(sqlite_url, tmp_path, WORKER_IN_WEB="false", VONAGE_APPLICATION_ID=app_id,
                           VONAGE_PRIVATE_KEY_PATH=str(tmp_path / "private.key"), VONAGE_API_BASE=vonage.url,
                           SEND_RATE="40", SEND_UNKNOWN_WAIT_SECONDS="3")
        server = stack.gunicorn(env, port=port)
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        base = server.url
        with requests.Session() as session:
            for i in range(200):
                body = {"to": f"447700900{i:03d}", "from": "AcmeShop", "channel": "sms", "message_type": "text",
                        "text": f"Your code is {1000 + i}"}
                assert session.post(base + "/api/outbox", json=body, headers=auth, timeout=10).status_code == 202
        engine = engine_for(sqlite_url)

        def sent_refs():
            with engine.connect() as conn:
                return set(conn.execute(select(outbox.c.client_ref).where(outbox.c.state == "sent")).scalars())

        worker = stack.worker(env)
        deadline = time.monotonic() + 60
        while len(vonage.sent) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.kill()
        recorded_sent = sent_refs()
        assert 0 < len(recorded_sent) < 200, "the kill should land mid-way"

        stack.worker(env)
        deadline = time.monotonic() + 90
        while len(sent_refs()) < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        posts = Counter(m.body["client_ref"] for m in vonage.sent)
        assert len(sent_refs()) == 200, f"{200 - len(sent_refs())} messages were never sent"
        assert all(posts[ref] == 1 for ref in recorded_sent), "a message recorded as sent was sent again"
        print(f"\n[outbox kill] killed after {len(recorded_sent)} recorded as sent; all 200 sent; "
              f"{sum(posts.values())} requests to Vonage for 200 messages")
