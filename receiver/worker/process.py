"""The worker as a process of gunicorn's own, beside the web processes (WORKER_IN_WEB, the default).

gunicorn.conf.py asks gunicorn for one process more than WEB_CONCURRENCY; each process gunicorn forks
tries a lock the master made, and the one that holds it is the worker: it serves no request and runs
the worker's loop, its heartbeat and the sender. gunicorn supervises it like the others (a process
that dies is forked again, and the new one takes the lock), and SIGTERM finishes its current event.
Out of the web processes, the worker's Python work no longer competes with acknowledgements for their
interpreter lock (bench/README.md has the measurement). Web processes wake it through
receiver.platform.wake after storing a callback.
"""
from __future__ import annotations

import fcntl
import logging
import os
import selectors
import tempfile
import threading

from receiver.platform import wake
from receiver.storage import get_storage
from receiver.worker.loop import Worker
from receiver.worker.supervisor import Supervisor

log = logging.getLogger("receiver.worker")

ENVIRONMENT = "RECEIVER_WORKER_LOCK"  # the lock file the master made; set only when a worker process is wanted


def make_role() -> None:
    """In the gunicorn master: the lock that names the worker process, and the wake socket pair."""
    if os.environ.get(ENVIRONMENT) and wake.available():
        return  # made at start; a reload keeps them
    folder = tempfile.mkdtemp(prefix="receiver-worker-")
    path = os.path.join(folder, "worker.lock")
    open(path, "w").close()
    os.environ[ENVIRONMENT] = path
    wake.make_pair()


def drop_role() -> None:
    """In the gunicorn master, when no process is to run the worker (every process serves)."""
    os.environ.pop(ENVIRONMENT, None)
    wake.forget()


def take_role():
    """In a process gunicorn forked: an open file holding the worker's lock when this process is to be the
    worker, else None (a web process). The lock goes with the process."""
    path = os.environ.get(ENVIRONMENT)
    if not path:
        return None
    held = open(path, "w")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        held.close()
        return None
    return held


def run(gunicorn_worker) -> None:
    """The worker process's main loop: the worker runs in a thread; this one tells gunicorn it is alive,
    passes wakes on, and at SIGTERM stops the worker after its current event."""
    app = gunicorn_worker.wsgi
    supervisor = Supervisor(Worker(get_storage(app), app.config))
    thread = threading.Thread(target=supervisor.run, name="receiver-worker", daemon=True)
    thread.start()
    poller = selectors.DefaultSelector()
    poller.register(gunicorn_worker.PIPE[0], selectors.EVENT_READ, "signal")
    if wake.receiving_fd() is not None:
        poller.register(wake.receiving_fd(), selectors.EVENT_READ, "wake")
    log.info("process %d is the worker", os.getpid())
    try:
        while gunicorn_worker.alive and thread.is_alive():
            gunicorn_worker.notify()
            for key, _ in poller.select(1.0):
                if key.data == "wake":
                    wake.drain()
                    supervisor.wake()
                else:
                    _drain(gunicorn_worker.PIPE[0])
            if gunicorn_worker.ppid != os.getppid():
                break
    finally:
        supervisor.worker.stop()
        thread.join(timeout=max(1.0, gunicorn_worker.cfg.graceful_timeout - 2))
        poller.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
