"""receiver.platform.background: a background step that fails is logged and runs again; it never dies."""
from __future__ import annotations

import logging
import threading

from receiver.platform import background


def test_a_step_that_raises_is_logged_with_its_traceback_and_runs_again(monkeypatch, caplog):
    monkeypatch.setattr(background, "RESTART_SECONDS", (0.01, 0.02))
    stop, runs, failures = threading.Event(), [], []

    def step():
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("a bug")
        stop.set()

    background.forever("the step", step, stop, logging.getLogger("test.background"), on_failure=lambda: failures.append(1))
    assert len(runs) == 3 and len(failures) == 2
    logged = [r for r in caplog.records if r.name == "test.background"]
    assert len(logged) == 2 and all(r.exc_info and "a bug" in str(r.exc_info[1]) for r in logged)


def test_an_expected_failure_is_one_line_and_waits_its_own_time(caplog):
    stop, runs = threading.Event(), []

    def step():
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("the database is down")
        stop.set()

    background.forever("the step", step, stop, logging.getLogger("test.background"), expected=(ConnectionError,),
                       expected_wait=0.01, on_failure=lambda: runs.append("failure"))
    (line,) = [r for r in caplog.records if r.name == "test.background"]
    assert line.exc_info is None and "the database is down" in line.getMessage()
    assert "failure" not in runs  # not a bug: nothing to clean up


def test_start_runs_it_in_a_named_daemon_thread_until_stopped():
    stop, ran = threading.Event(), threading.Event()
    thread = background.start("receiver-test", lambda: ran.set() or 0.01, stop, logging.getLogger("test"))
    assert ran.wait(2) and thread.daemon and thread.name == "receiver-test"
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
