"""Nothing a callback contains can stop or loop the worker, or keep it from being stored.

Poison callbacks of many kinds, each correctly signed, go in among normal ones, on SQLite and
PostgreSQL: every one is answered 200 and stored; the normal ones are processed; each poison ends
as `invalid` with a reason at its first attempt; nothing is left pending or processing.
"""
import json
import os
import socket
import sys
import threading
import time

import pytest
import sqlalchemy
from sqlalchemy import select, update

import handlers
from devkit import samples
from receiver.storage import get_storage
from receiver.storage.schema import events, messages, workers
from receiver.webhooks.payloads import Callback
from receiver.worker.loop import Worker, this_machine
from receiver.worker.supervisor import Supervisor
from tests.conftest import ADMIN_TOKEN, Vonage, compact, count_states
from tests.poison import MESSAGES_POISON, SMS_POISON

def send_normal(sender, count=3):
    sent = [samples.message_status("submitted") for _ in range(count)]
    for payload in sent:
        assert sender.status(payload).status_code == 200
    return sent


@pytest.fixture
def any_app(make_app, database_url):
    return make_app(DATABASE_URL=database_url)


@pytest.mark.parametrize("what,kind,body", MESSAGES_POISON, ids=[p[0] for p in MESSAGES_POISON])
def test_messages_poison_is_stored_kept_invalid_and_holds_back_nothing(any_app, calls, what, kind, body):
    sender = Vonage(any_app.test_client())
    before = send_normal(sender)
    assert sender.messages(kind, None, body=body).status_code == 200
    after = send_normal(sender)
    storage = get_storage(any_app)

    Worker(storage, any_app.config, name="w").run_until_idle()

    assert count_states(storage.engine) == {"done": 6, "invalid": 1}
    (poison,) = storage.reads.events(state="invalid")
    assert poison["attempts"] == 1 and poison["last_error"]
    assert storage.reads.stored(poison["id"]).body == body  # the bytes as received
    assert [e.message_id for _, e in calls] == [p["message_uuid"] for p in before + after]


@pytest.mark.parametrize("via", ["GET", "json"])
@pytest.mark.parametrize("what,kind,params", SMS_POISON, ids=[p[0] for p in SMS_POISON])
def test_sms_api_poison_is_stored_kept_invalid_and_holds_back_nothing(any_app, calls, what, kind, params, via):
    if via == "GET" and "\x00" in "".join(params.values()):
        pytest.skip("a NUL cannot travel in a query string unencoded; the JSON variant covers it")
    sender = Vonage(any_app.test_client())
    send_normal(sender)
    assert sender.sms(kind, params, via=via).status_code == 200
    storage = get_storage(any_app)

    Worker(storage, any_app.config, name="w").run_until_idle()

    assert count_states(storage.engine) == {"done": 3, "invalid": 1}
    assert len(calls) == 3


def test_the_worker_loop_survives_a_poison_event_and_keeps_going(app, vonage, storage, calls):
    # Run as production runs it: the supervised loop in a thread, fed while it runs.
    supervisor = Supervisor(Worker(storage, app.config, name="loop"))
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    try:
        vonage.sms("delivery-receipt", samples.delivery_receipt(**{"message-timestamp": "9999-12-31T23:59:59-01:00"}))
        vonage.status(samples.message_status("read", "whatsapp"))
        deadline = time.monotonic() + 10
        while count_states(storage.engine) != {"done": 1, "invalid": 1} and time.monotonic() < deadline:
            supervisor.worker.notify()
            time.sleep(0.05)
        assert count_states(storage.engine) == {"done": 1, "invalid": 1}
        assert thread.is_alive() and supervisor.healthy
    finally:
        supervisor.worker.stop()
        thread.join(timeout=10)


def test_a_handler_that_exits_fails_its_event_only(make_app, monkeypatch):
    app = make_app(RETRY_BASE_SECONDS=60.0)
    vonage, storage = Vonage(app.test_client()), get_storage(app)
    monkeypatch.setitem(handlers.STATUS_HANDLERS, "read", lambda event: sys.exit(3))
    vonage.status(samples.message_status("read", "whatsapp"))
    vonage.status(samples.message_status("delivered"))
    assert Worker(storage, app.config, name="w").run_until_idle() == 2
    assert count_states(storage.engine) == {"failed": 1, "done": 1}
    (failed,) = storage.reads.events(state="failed")
    assert "SystemExit" in failed["last_error"]


def test_a_failed_handler_logs_its_exception(make_app, monkeypatch, caplog):
    app = make_app(RETRY_BASE_SECONDS=60.0)
    vonage, storage = Vonage(app.test_client()), get_storage(app)
    monkeypatch.setitem(handlers.STATUS_HANDLERS, "delivered", lambda event: 1 / 0)
    vonage.status(samples.message_status("delivered"))
    Worker(storage, app.config, name="w").run_until_idle()
    (line,) = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert "ZeroDivisionError: division by zero" in line


def test_a_refused_callback_does_not_fail_the_others_of_its_commit(storage):
    """Values the database cannot take (here: lone surrogates the request path would never let
    through) in one group commit: the others are stored, and so is the poison, by its hash."""
    results, barrier = {}, threading.Barrier(30)

    def send(i):
        bad = i == 13
        found = Callback(kind="message-status", body=b'{"n":%d}' % i, query="", content_type="application/json",
                         dedup_key=f"k{i}\ud800" if bad else f"k{i}", message_id="m\ud800" if bad else f"m{i}")
        barrier.wait()
        try:
            results[i] = storage.inbox.record(found)
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            results[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(not isinstance(r, Exception) for r in results.values()), results
    with storage.engine.connect() as conn:
        poison = conn.execute(select(events).where(events.c.body == b'{"n":13}')).one()
    assert poison.dedup_key.startswith("sha256:") and poison.message_id is None
    assert count_states(storage.engine) == {"pending": 30}


def test_a_surrogate_in_any_id_is_answered_200_over_http(vonage, storage):
    body = compact(samples.message_status("delivered")).replace(b'"message_uuid":"', b'"message_uuid":"\\ud800', 1)
    assert vonage.status(None, body=body).status_code == 200
    assert vonage.status(None, body=body).status_code == 200  # a repeat is still a repeat
    (stored,) = storage.reads.events()
    assert stored["deliveries"] == 2 and stored["message_id"] is None


# -- claims ----------------------------------------------------------------------------------------
def test_a_dead_workers_claims_are_free_at_once_not_after_the_lease(app, vonage, storage, calls):
    vonage.status(samples.message_status("delivered"))
    (claimed,) = storage.inbox.claim("gone:1:1", lease_seconds=300, limit=1)
    assert Worker(storage, app.config, name="w").run_until_idle() == 0  # its heartbeat is fresh: still its
    with storage.engine.begin() as conn:  # ...three heartbeats pass without one from it
        conn.execute(update(workers).where(workers.c.name == "gone:1:1").values(seen_at=time.time() - 60))
    assert Worker(storage, app.config, name="w").run_until_idle() == 1
    assert len(calls) == 1


def test_a_restarting_worker_takes_back_what_its_dead_predecessor_held(app, vonage, storage, calls):
    vonage.status(samples.message_status("delivered"))
    dead_pid = _a_pid_that_is_not_running()
    storage.inbox.claim(f"{this_machine()}:{dead_pid}:1", lease_seconds=300, limit=1)  # heartbeat fresh
    supervisor = Supervisor(Worker(storage, app.config, name="next"))
    supervisor._take_back_from_dead_predecessors()
    assert Worker(storage, app.config, name="next").run_until_idle() == 1


def test_a_worker_of_another_pid_namespace_with_the_same_host_name_is_not_taken_for_dead(app, vonage, storage):
    """Two containers with one host name: the other's pids mean nothing here, so its live claims stay its."""
    if not os.path.exists("/proc/self/ns/pid"):
        pytest.skip("no pid namespaces here (not Linux)")
    here = f"{socket.gethostname()}~{os.stat('/proc/self/ns/pid').st_ino}"
    assert Worker(storage, app.config).name.startswith(here + ":")  # a worker says which namespace its pid is in
    vonage.status(samples.message_status("delivered"))
    other = f"{socket.gethostname()}~{os.stat('/proc/self/ns/pid').st_ino + 1}:{_a_pid_that_is_not_running()}:1"
    storage.inbox.claim(other, lease_seconds=300, limit=1)
    Supervisor(Worker(storage, app.config, name="next"))._take_back_from_dead_predecessors()
    assert count_states(storage.engine) == {"processing": 1}


def _a_pid_that_is_not_running() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid += 1


def test_a_handler_slower_than_the_lease_runs_once(make_app, monkeypatch):
    import receiver.worker.supervisor as supervisor_module

    app = make_app(LEASE_SECONDS=1.0, WORKER_POLL_SECONDS=0.05)
    storage = get_storage(app)
    monkeypatch.setattr(supervisor_module, "HEARTBEAT_SECONDS", 0.2)
    runs = []
    monkeypatch.setitem(handlers.STATUS_HANDLERS, "delivered", lambda event: (runs.append(event.event_id),
                                                                             time.sleep(3)))
    Vonage(app.test_client()).status(samples.message_status("delivered"))
    supervisors = [Supervisor(Worker(storage, app.config, name=f"w{i}")) for i in range(2)]
    threads = [threading.Thread(target=s.run, daemon=True) for s in supervisors]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 15
    while count_states(storage.engine) != {"done": 1} and time.monotonic() < deadline:
        time.sleep(0.1)
    for s in supervisors:
        s.worker.stop()
    for t in threads:
        t.join(timeout=10)
    assert count_states(storage.engine) == {"done": 1}
    assert runs == [1], "a second worker took the event while the first still ran it"


def test_worker_until_idle_beats_and_renews_its_lease_while_a_handler_runs(make_app, monkeypatch):
    """`flask worker --until-idle` has no supervisor loop: its heartbeat must run all the same, or a
    long batch looks dead to the other workers and its events are taken from under it."""
    from receiver.worker.supervisor import until_idle

    app = make_app(LEASE_SECONDS=0.6)  # a beat every 0.2 s
    storage = get_storage(app)
    seen = []

    def slow(event):
        with storage.engine.connect() as conn:
            seen.append(conn.execute(select(events.c.lease_until).where(events.c.id == event.event_id)).scalar())
            time.sleep(1.5)
            seen.append(conn.execute(select(events.c.lease_until).where(events.c.id == event.event_id)).scalar())

    monkeypatch.setitem(handlers.STATUS_HANDLERS, "delivered", slow)
    Vonage(app.test_client()).status(samples.message_status("delivered"))
    assert until_idle(app) == 1
    assert seen[1] > seen[0] + 1.0, "the lease was not renewed while the handler ran"
    assert count_states(storage.engine) == {"done": 1}


def test_a_failing_loop_is_restarted_with_its_traceback_logged(app, vonage, storage, calls, monkeypatch, caplog):
    from receiver.platform import background

    monkeypatch.setattr(background, "RESTART_SECONDS", (0.05, 0.1))
    worker = Worker(storage, app.config, name="w")
    real, failures = worker.run_once, []

    def broken_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug in the loop")
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "run_once", broken_once)
    vonage.status(samples.message_status("delivered"))
    supervisor = Supervisor(worker)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    thread.join(timeout=10)
    assert len(calls) == 1
    (failed,) = [r for r in caplog.records if "the loop failed" in r.getMessage()]
    assert failed.exc_info and "a bug in the loop" in str(failed.exc_info[1])


# -- readiness -------------------------------------------------------------------------------------
def test_readyz_says_when_this_processes_worker_thread_is_not_running(make_app):
    app = make_app(WORKER_IN_WEB=True)
    client = app.test_client()
    assert client.get("/readyz").status_code == 200  # the first request starts the thread
    supervisor = app.extensions["supervisor"]
    supervisor.worker.stop()
    supervisor.thread.join(timeout=10)
    app.before_request_funcs[None].clear()  # keep the next request from starting a new thread
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["error"] == "worker_not_running"


def test_readyz_says_when_the_backlog_has_stalled(app, client, vonage, storage):
    vonage.status(samples.message_status("delivered"))
    with storage.engine.begin() as conn:  # due for two minutes, and no worker has finished anything
        conn.execute(update(events).values(available_at=time.time() - 120))
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["error"] == "backlog_stalled"
    storage.inbox.heartbeat("w", 1, time.time())  # a worker that just finished an event: moving again
    assert client.get("/readyz").status_code == 200


# -- the smaller ones ------------------------------------------------------------------------------
def test_sms_json_with_a_repeated_key_is_refused_like_a_repeated_parameter(client, storage):
    from receiver.webhooks.signatures import sign_sms
    from tests.conftest import SECRET, SMS_METHOD

    params = sign_sms(dict(samples.delivery_receipt("delivered"), **{"api-key": "a1b2c3d4"}), SECRET, SMS_METHOD)
    body = compact(params)[:-1] + b',"status":"failed"}'  # status twice: which one did the sig cover?
    response = client.post("/webhooks/delivery-receipt", data=body, content_type="application/json")
    assert response.status_code == 401 and response.get_json()["error"] == "duplicate_param"
    assert storage.reads.events() == []


def test_a_chunked_body_over_the_limit_is_413_not_a_forgery(make_app):
    import io

    app = make_app(MAX_CONTENT_LENGTH=1000)
    body = compact(samples.inbound_message("whatsapp", "text", text="x" * 2000))
    response = app.test_client().post("/webhooks/inbound-message", input_stream=io.BytesIO(body),
                                      headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                                      environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert get_storage(app).reads.rejections() == []


def test_api_answers_valid_json_even_for_stored_nan(client, storage):
    with storage.engine.begin() as conn:  # a message row written before strict parsing existed
        conn.execute(messages.insert().values(
            message_id="m1", direction="inbound", status="received", status_rank=1, incomplete=False,
            content='{"location": {"lat": NaN, "long": Infinity}}', created_at=1.0, updated_at=1.0))
    response = client.get("/api/messages/m1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
    decoded = json.loads(response.data, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert decoded["content"] == {"location": {"lat": None, "long": None}}


@pytest.mark.parametrize("path", ["/api/events/9223372036854775808", "/api/events/99999999999999999999999/replay"])
def test_an_event_id_past_64_bits_is_404(client, path):
    method = client.post if path.endswith("replay") else client.get
    response = method(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


@pytest.mark.parametrize("header, code", [("bearer s3cret", 200), ("BEARER s3cret", 200), ("s3cret", 401),
                                          ("Bearer wrong", 401), ("Basic s3cret", 401)])
def test_metrics_and_api_read_the_token_the_same_way(make_app, header, code):
    app = make_app(METRICS_TOKEN="s3cret", ADMIN_TOKEN="s3cret")
    client = app.test_client()
    assert client.get("/metrics", headers={"Authorization": header}).status_code == code
    assert client.get("/api/events", headers={"Authorization": header}).status_code == code


def test_doctor_warns_of_claims_held_by_a_dead_worker(app, runner, vonage, storage):
    vonage.status(samples.message_status("delivered"))
    storage.inbox.claim("gone:1:1", lease_seconds=300, limit=1)
    with storage.engine.begin() as conn:
        conn.execute(update(workers).values(seen_at=time.time() - 60))
    storage.inbox.heartbeat("alive", 0, time.time())
    result = runner.invoke(args=["vonage", "doctor"])
    line = next(line for line in result.output.splitlines() if "backlog" in line)
    assert line.startswith("WARN") and "held by a worker that is gone" in line


def test_processing_rows_count_as_stuck_in_stats_once_their_worker_is_gone(app, vonage, storage):
    vonage.status(samples.message_status("delivered"))
    storage.inbox.claim("gone:1:1", lease_seconds=300, limit=1)
    assert storage.stats.collect().stuck == 0
    with storage.engine.begin() as conn:
        conn.execute(sqlalchemy.update(workers).values(seen_at=time.time() - 60))
    assert storage.stats.collect().stuck == 1
