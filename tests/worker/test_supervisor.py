"""receiver.worker.supervisor: the loop as production runs it, in a supervised thread that survives what
it meets and is restarted when it fails; the heartbeat that keeps a slow handler's claims its own; and a
starting worker taking back what a dead predecessor held."""
import os
import socket
import threading
import time

import pytest
from sqlalchemy import select

import handlers
from devkit import samples
from receiver.storage import get_storage
from receiver.storage.schema import events
from receiver.worker.loop import Worker, this_machine
from receiver.worker.supervisor import Supervisor
from tests.conftest import Vonage, count_states


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


# -- claims a dead predecessor held ---------------------------------------------------------------
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
