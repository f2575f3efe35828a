"""Running the worker: as a thread of each web process (the default) or as `flask worker`, supervised.

The loop is restarted when it fails (one JSON log line with the traceback each time, receiver.platform
.background), a separate heartbeat thread says the worker is alive and renews the leases of the events it holds (a slow
handler is never run twice at once), and at start a worker takes back what a dead predecessor on
this machine had claimed. Never started at import, nor in a CLI command's process.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time

import click
from flask import Flask

from receiver.operator import metrics
from receiver.platform import background, wake
from receiver.sending.delivery import NOT_CONFIGURED, Sender, client_settings
from receiver.storage import StorageUnavailable, get_storage
from receiver.storage.stats import HEARTBEAT_SECONDS
from receiver.worker.loop import Worker, this_machine

log = logging.getLogger("receiver.worker")


class Supervisor:
    """Runs one Worker's loop until it is told to stop, whatever the loop raises."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.running = False  # the loop is running (not between a failure and its restart)
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        # The outbox's sender, when sending is configured: a thread of its own beside the loop.
        self.sender = Sender(worker.storage, worker.config, worker.name) if client_settings(worker.config) else None
        if self.sender is not None:
            worker.wake_sender = self.sender.notify
        else:
            worker.wake_sender = _unsent.note  # a handler queued messages that nothing will send

    @property
    def healthy(self) -> bool:
        """The loop is running; for a background thread, the thread is alive too."""
        return self.running and (self.thread is None or self.thread.is_alive())

    def run(self) -> None:
        """Run the loop in this thread, with the heartbeat and the sender beside it, until the worker stops."""
        worker = self.worker
        self.running = True
        log.info("worker %s started", worker.name)
        beats = _heartbeat(worker)
        sends = None
        if self.sender is not None:
            poll = worker.config["WORKER_POLL_SECONDS"]
            sends = background.start("receiver-sender", self._send_once, worker.stopped, log,
                                     expected=(StorageUnavailable,), expected_wait=poll)
        self._take_back_from_dead_predecessors()
        try:
            # The database down or refusing us is expected: what was claimed is given back or its lease
            # runs out, so nothing is lost. Anything else is a bug in the loop: logged, and it starts again.
            background.forever(f"worker {worker.name}: the loop", self._step, worker.stopped, log,
                               expected=(StorageUnavailable,),
                               expected_wait=min(5.0, worker.config["WORKER_POLL_SECONDS"] * 4),
                               on_failure=self._failed)
        finally:
            self.running = False
            beats.join(timeout=HEARTBEAT_SECONDS + 1)
            if sends is not None:
                sends.join(timeout=worker.config["SEND_TIMEOUT_SECONDS"] + 5)  # a send in flight ends by its deadline
        log.info("worker %s stopped after %d events", worker.name, worker.processed)

    def _step(self) -> float | None:
        wait = self.worker.step()
        self.running = True
        return wait

    def _failed(self) -> None:
        self.running = False
        metrics.WORKER_RESTARTS.inc()
        self.worker.give_back()

    def wake(self) -> None:
        """A callback was stored or a message queued: look for work now."""
        self.worker.notify()
        if self.sender is not None:
            self.sender.notify()

    def _send_once(self) -> None:
        if not self.sender.run_once(self.worker.stopped):
            self.sender.wait(self.worker.config["WORKER_POLL_SECONDS"])

    def _take_back_from_dead_predecessors(self) -> None:
        """Claims held by a worker of this machine whose process is gone are due again now,
        rather than when their lease runs out (a restart after kill -9, a crash, the OOM killer)."""
        host = this_machine()
        try:
            dead = [name for name in self.worker.storage.inbox.claim_holders() if _dead_process_here(name, host)]
            if dead:
                taken = self.worker.storage.inbox.take_back(dead)
                log.info("worker %s took back %d events claimed by %s", self.worker.name, taken, ", ".join(dead))
        except Exception as exc:
            log.warning("worker %s: could not look for a predecessor's claims: %s", self.worker.name,
                        exc.__class__.__name__)


class _Unsent:
    """One warning a few minutes at most: a handler queued messages and sending is not configured."""

    def __init__(self, every: float = 300.0):
        self.every, self.last = every, None

    def note(self) -> None:
        now = time.monotonic()
        if self.last is None or now - self.last >= self.every:
            self.last = now
            log.warning("a handler queued messages that will stay queued: %s", NOT_CONFIGURED)


_unsent = _Unsent()


def _heartbeat(worker: Worker) -> threading.Thread:
    """Start the worker's heartbeat thread (it stops with the worker)."""
    # Often enough that a lease shorter than the heartbeat is still renewed before it runs out.
    every = min(HEARTBEAT_SECONDS, worker.config["LEASE_SECONDS"] / 3)

    def beat() -> float:
        worker.beat()
        return every

    return background.start("receiver-heartbeat", beat, worker.stopped, log, expected=(StorageUnavailable,),
                            expected_wait=every)


def _dead_process_here(name: str, host: str) -> bool:
    """True for a worker name (machine:pid:thread) of this machine whose process no longer exists."""
    found_host, _, rest = name.partition(":")
    pid = rest.partition(":")[0]
    if found_host != host or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists (another user's process)
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A killed process nobody has reaped yet (a container whose init does not reap) still has a pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


# -- in a web process ------------------------------------------------------------------------------
_start_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """With WORKER_IN_WEB, under gunicorn the worker is a process of its own (receiver.worker.process);
    under the development server it is a thread of the serving process, started with it (with the first
    request under any other server): never at import, and never in a CLI command's process."""
    app.extensions["supervisor"] = None
    if app.config["WORKER_IN_WEB"] and not wake.available():
        app.before_request(lambda: ensure_background_worker(app) and None)
        if _serving_under_flask_run():
            # A backlog, a due retry or `flask vonage send --wait` must not wait for someone to open a page.
            ensure_background_worker(app)


def _serving_under_flask_run() -> bool:
    """This process is the one `flask run` serves from: not the reloader's watching parent, not another command."""
    from flask.cli import run_command
    from flask.helpers import get_debug_flag

    context = click.get_current_context(silent=True)
    if context is None or context.command is not run_command:
        return False
    reload = context.params.get("reload")
    if reload is None:  # as `flask run` decides it
        reload = get_debug_flag()
    return not reload or os.environ.get("WERKZEUG_RUN_MAIN") == "true"


def ensure_background_worker(app: Flask) -> Supervisor:
    """Start this process's worker thread unless it runs (idempotent, fork-aware; a dead thread is replaced)."""
    current = app.extensions.get("supervisor")
    if current is not None and current.pid == os.getpid() and current.thread.is_alive():
        return current
    with _start_lock:
        current = app.extensions.get("supervisor")
        if current is not None and current.pid == os.getpid():
            if current.thread.is_alive():
                return current
            log.error("the worker thread of process %d had stopped; starting a new one", os.getpid())
        supervisor = Supervisor(Worker(get_storage(app), app.config, beside_requests=True))
        supervisor.thread = threading.Thread(target=supervisor.run, name="receiver-worker", daemon=True)
        app.extensions["supervisor"] = supervisor
        supervisor.thread.start()
        atexit.register(_finish, supervisor)
        return supervisor


def notify(app: Flask) -> None:
    """A callback was stored or a message queued: wake the worker process, or this process's worker thread."""
    if wake.available():
        wake.send()
        return
    supervisor = app.extensions.get("supervisor")
    if supervisor is not None:
        supervisor.wake()


def worker_problem(app: Flask, live_workers: int) -> str | None:
    """Why the worker that WORKER_IN_WEB runs beside this web process is not working (None when it is, or
    when there is none by design). `live_workers`: how many workers have beaten lately."""
    if not app.config["WORKER_IN_WEB"]:
        return None
    if wake.available():  # gunicorn's worker process: alive when some worker beats
        return None if live_workers else "no worker process has written a heartbeat lately (see the log)"
    supervisor = app.extensions.get("supervisor")
    if supervisor is None or supervisor.pid != os.getpid():
        return "the worker thread has not started"
    if not supervisor.healthy:
        return "the worker thread is not running (see the log for its traceback)"
    return None


def _finish(supervisor: Supervisor) -> None:
    # At interpreter exit: let the current event finish (bounded, under gunicorn's graceful timeout).
    supervisor.worker.stop()
    supervisor.thread.join(timeout=25)


# -- `flask worker` --------------------------------------------------------------------------------
def run_forever(app: Flask) -> Worker:
    """`flask worker`: loop in this process until SIGTERM/SIGINT.

    The first signal finishes the current event and exits; a second one stops at once.
    """
    worker = Worker(get_storage(app), app.config)

    def on_signal(signum, _frame):
        if worker.stopping:
            worker.hard_stop = True
            raise SystemExit(128 + signum)
        log.info("worker %s: signal %d, finishing the current event", worker.name, signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Supervisor(worker).run()
    return worker


def until_idle(app: Flask) -> int:
    """`flask worker --until-idle`: process what is due now, then return how many were processed.
    Its heartbeat runs as in `flask worker`: a batch longer than ALIVE_SECONDS must not look dead."""
    worker = Worker(get_storage(app), app.config)
    beats = _heartbeat(worker)
    try:
        return worker.run_until_idle()
    finally:
        worker.stop()
        beats.join(timeout=HEARTBEAT_SECONDS + 1)


def started_at_boot(app) -> None:
    """gunicorn's post_worker_init without a worker process of its own: start this process's worker thread
    at boot, not at the first request, so a backlog a previous deploy left is processed at once."""
    if getattr(app, "config", {}).get("WORKER_IN_WEB") and not wake.available():
        ensure_background_worker(app)

