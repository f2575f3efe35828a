"""The processes a whole-system test starts, and what it reads back from their database.

gunicorn servers and `flask worker`s serve tests/recording_app.py, whose handlers write every dispatch
to test_dispatch_log and the idempotent effect to test_effects; tests/load.py sends signed callbacks
and retries, as Vonage does, whatever got no answer or a 5xx. Shared by tests/system/ and
tests/platform/test_serving.py.
"""
from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from receiver.storage.schema import events
from tests import load
from tests.conftest import ADMIN_TOKEN, SECRET, SMS_METHOD, count_states
from tests.recording_app import dispatch_log, effects
from tests.servers import Server, app_env, flask_worker, gunicorn

RECORDING_APP = "tests.recording_app"
LEASE_SECONDS = 3  # events claimed by a killed worker come back this fast
SETTLE_SECONDS = 150  # bound on waiting for the workers to finish the backlog


# -- processes ---------------------------------------------------------------------------------
class Stack:
    """The processes one test starts: gunicorn servers and `flask worker`s, all stopped when it ends."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list = []

    def gunicorn(self, env: dict, workers: int = 2, port: int | None = None) -> Server:
        n = len(self.started)
        # Each server counts its metrics in its own folder: gunicorn empties it when it starts.
        env = dict(env, PROMETHEUS_MULTIPROC_DIR=str(self.tmp_path / f"metrics-{n}"))
        server = gunicorn(env, workers=workers, port=port, app=f"{RECORDING_APP}:create_app()",
                          log_path=self.tmp_path / f"gunicorn-{n}.log")
        self.started.append(server)
        return server.start(timeout=30)

    def worker(self, env: dict):
        n = len(self.started)
        child = flask_worker(env, app=RECORDING_APP, log_path=self.tmp_path / f"worker-{n}.log")
        self.started.append(child)
        return child.start()

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


def receiver_env(database_url: str, tmp_path: Path, **extra: str) -> dict:
    settings = {
        "VONAGE_SIGNATURE_SECRET": SECRET,
        "VONAGE_SIGNATURE_METHOD": SMS_METHOD,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "LEASE_SECONDS": str(LEASE_SECONDS),
        "WORKER_POLL_SECONDS": "0.2",
        "LOG_LEVEL": "WARNING",  # a JSON line per callback costs a 2-core machine a good share of its CPU
    }
    return app_env(database_url, **{**settings, **extra})


# -- what the database says ------------------------------------------------------------------------
def wait_until_settled(engine, distinct: int, timeout: float = SETTLE_SECONDS) -> dict[str, int]:
    """Wait until every one of `distinct` events is past pending/processing/failed; the final state counts."""
    deadline = time.monotonic() + timeout
    while True:
        states = count_states(engine)
        busy = sum(states.get(s, 0) for s in ("pending", "processing", "failed"))
        if (busy == 0 and sum(states.values()) >= distinct) or time.monotonic() > deadline:
            return states
        time.sleep(0.25)


def stored_keys(engine) -> set[tuple]:
    with engine.connect() as conn:
        return set(conn.execute(select(events.c.kind, events.c.message_id, events.c.status)).all())


def deliveries_by_key(engine) -> dict[tuple, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(events.c.kind, events.c.message_id, events.c.status, events.c.deliveries)).all()
    return {(r.kind, r.message_id, r.status): r.deliveries for r in rows}


def effect_keys(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(effects.c.key)).scalars())


def dispatches(engine) -> dict[int, list[int]]:
    """event id -> the pids that dispatched it, in order."""
    with engine.connect() as conn:
        rows = conn.execute(select(dispatch_log.c.event_id, dispatch_log.c.pid).order_by(dispatch_log.c.at)).all()
    found: dict[int, list[int]] = {}
    for event_id, pid in rows:
        found.setdefault(event_id, []).append(pid)
    return found


def identity(callback: load.Callback) -> tuple:
    return (callback.kind, callback.message_id, callback.status)


def assert_every_callback_kept_and_dispatched(engine, report: load.Report, deliveries: list, label: str) -> dict:
    """The guarantees shared by every scenario; returns the dispatches for scenario-specific checks."""
    distinct = list({id(c): c for c in deliveries}.values())
    states = wait_until_settled(engine, len(distinct))
    acknowledged = {identity(deliveries[i]) for i in report.acknowledged}
    missing = acknowledged - stored_keys(engine)
    assert not missing, f"{label}: {len(missing)} acknowledged callbacks are not stored, e.g. {sorted(missing)[:3]}"
    assert len(acknowledged) == len(distinct), f"{label}: not every callback was acknowledged: {report.summary()}"
    assert states == {"done": len(distinct)}, f"{label}: events not all done: {states}"
    keys = effect_keys(engine)
    assert len(keys) == len(distinct) and set(keys) == {c.key for c in distinct}, f"{label}: effects do not match"
    found = dispatches(engine)
    assert len(found) == len(distinct), f"{label}: {len(distinct) - len(found)} events were never dispatched"
    return found
