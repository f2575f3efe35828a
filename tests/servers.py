"""Real processes for end-to-end tests: gunicorn serving the app and `flask worker`, on loopback.

Every process a test starts is in a session of its own, so that its whole group can be signalled, and
every way of stopping one ends in SIGKILL after a timeout: a child that ignores SIGINT or SIGTERM, or
that started children of its own, never keeps a test (or the run) waiting.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(predicate, timeout: float = 10.0):
    """Poll until `predicate()` returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def assert_ready(url: str, timeout: float = 20.0) -> None:
    """/readyz answers 200 within `timeout`: a server that just started is ready once its worker process has
    written its first heartbeat (within a second or two), not necessarily at its first request."""
    deadline, answer = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        answer = requests.get(url + "/readyz", timeout=5)
        if answer.status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"/readyz still answers {answer.status_code}: {answer.text[:300]}")


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group `pgid` (a child started in a session of its own, and what it started), if any
    of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def run(args: list[str], *, timeout: float, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """`subprocess.run(args, capture_output=True, text=True)`, in a session of its own. Past `timeout` the
    whole group is killed, the children it started included (subprocess.run kills only the one process),
    and TimeoutExpired is raised as subprocess.run raises it; whatever it leaves running when it exits is
    killed too."""
    with subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=10)
            raise
        finally:
            kill_group(proc.pid)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    """A child process in its own session (so its whole group can be signalled); stopped and reaped by `stop()`."""

    def __init__(self, args: list[str], env: dict, log_path: Path | None = None):
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> "Child":
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if self.log_path:
                out.close()
        return self

    def log_tail(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def kill(self) -> int:
        """SIGKILL this process group now, as a crash or the OOM killer would; returns the pid it had."""
        pid = self.proc.pid
        os.killpg(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """`sig` to the process group, then SIGKILL if it has not exited within `timeout`; whatever of the
        group outlives its leader (a worker its master forked) is killed too. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                kill_group(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        kill_group(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Server(Child):
    """A child process serving HTTP on 127.0.0.1:<port>; `start()` returns once it answers."""

    def __init__(self, args: list[str], env: dict, port: int | None = None, log_path: Path | None = None):
        super().__init__(args, env, log_path)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/healthz", timeout: float = 20.0) -> "Server":
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()  # what it started, if anything, goes with it
                raise RuntimeError(f"{self.args[0]} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if requests.get(self.url + ready_path, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.args[0]} did not become ready: {self.log_tail()}")


def app_env(database_url: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "VONAGE_", "DATABASE_"))}
    env.update(DATABASE_URL=database_url, PYTHONUNBUFFERED="1", **extra)
    return env


def gunicorn(env: dict, *, port: int | None = None, workers: int = 2, log_path: Path | None = None,
             app: str = "app:create_app()") -> Server:
    port = port or free_port()
    env = dict(env, PORT=str(port), HOST="127.0.0.1", WEB_CONCURRENCY=str(workers))
    return Server([str(BIN / "gunicorn"), app], env, port=port, log_path=log_path)


def flask_worker(env: dict, *, app: str = "app", log_path: Path | None = None) -> Child:
    """`flask --app <app> worker`: the worker as its own process (WORKER_IN_WEB=false)."""
    return Child([str(BIN / "flask"), "--app", app, "worker"], env, log_path=log_path)


def children_of(pid: int) -> list[int]:
    """The pids of a process's live children (gunicorn's master -> its worker processes), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after its closing parenthesis.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)
