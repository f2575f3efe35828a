"""Real processes for end-to-end tests: gunicorn serving the app and `flask worker`, on loopback."""
from __future__ import annotations

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
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        try:
            os.killpg(self.proc.pid, sig)
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)

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
