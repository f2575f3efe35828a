"""Starting and stopping what is measured: gunicorn serving the bare handler or the project, the
separate worker process, and a fresh database for each run. Every child is stopped on the way out.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy

import callbacks
from receiver.storage import unreachable_reason

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Gunicorn:
    """The gunicorn settings shared by the bare handler and the project: the project's own
    gunicorn.conf.py, with the worker class and counts given here on top."""

    workers: int = 2
    worker_class: str = "sync"
    threads: int = 1

    def args(self, port: int) -> list[str]:
        args = [str(BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
                "--workers", str(self.workers), "--worker-class", self.worker_class]
        if self.worker_class == "gthread":
            args += ["--threads", str(self.threads)]
        return args

    def __str__(self) -> str:
        threads = f" --threads {self.threads}" if self.worker_class == "gthread" else ""
        return f"gunicorn -w {self.workers} -k {self.worker_class}{threads}"


@dataclass
class Server:
    name: str
    port: int
    master: subprocess.Popen
    database_url: str | None = None
    worker: subprocess.Popen | None = None  # the separate `flask worker` process, if any
    log_path: Path | None = None
    extra: dict = field(default_factory=dict)

    def web_pids(self) -> list[int]:
        """The gunicorn worker processes (children of the master)."""
        return children(self.master.pid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _start(args: list[str], env: dict, log_path: Path, cwd: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        # Own session: stopping it signals exactly this process group, nothing else.
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _stop(process: subprocess.Popen, grace: float = 40.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def _wait_ready(port: int, process: subprocess.Popen, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log_path}:\n{log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready after {timeout:.0f}s; see {log_path}")


@contextlib.contextmanager
def fresh_database(backend: str, workdir: Path):
    """A database URL nobody has used yet: a file in `workdir`, or a new database on the local PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'receiver-{uuid.uuid4().hex[:8]}.sqlite3'}"
        return
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_problem() -> str | None:
    """None when the local PostgreSQL answers, else why not."""
    engine = sqlalchemy.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 2})
    try:
        return unreachable_reason(engine)
    finally:
        engine.dispose()


@contextlib.contextmanager
def serve_bare(settings: Gunicorn, workdir: Path):
    """gunicorn serving bench/bare.py."""
    port, log_path = free_port(), workdir / "bare.log"
    args = [*settings.args(port), "--pythonpath", str(BENCH), "bare:create_app()"]
    master = _start(args, dict(os.environ), log_path, ROOT)
    try:
        _wait_ready(port, master, log_path)
        yield Server("bare", port, master, log_path=log_path)
    finally:
        _stop(master)


def project_env(database_url: str, *, worker_in_web: bool = True) -> dict[str, str]:
    return dict(os.environ, **callbacks.server_env(), DATABASE_URL=database_url,
                WORKER_IN_WEB="true" if worker_in_web else "false", APP_ENV="production")


def init_database(database_url: str) -> None:
    """Bring the schema up to date once, the project's release step, before several processes race to."""
    subprocess.run([str(BIN / "flask"), "--app", "app", "init-db"], cwd=ROOT, env=project_env(database_url),
                   check=True, timeout=60, capture_output=True)


@contextlib.contextmanager
def serve_project(settings: Gunicorn, database_url: str, workdir: Path, *, worker_process: bool = False,
                  handler: str | None = None):
    """gunicorn serving the project on `database_url`; with `worker_process`, the worker runs as `flask worker`;
    with `handler` ("sleep" or "raise", see handler_modes.py), every handler is replaced by that one."""
    name = "project+worker" if worker_process else "project"
    if handler:
        name += f" ({handler} handler)"
    port, log_path = free_port(), workdir / f"{name.replace(' ', '-')}.log"
    env = project_env(database_url, worker_in_web=not worker_process)
    init_database(database_url)
    app = ["app:create_app()"]
    if handler:
        env["BENCH_HANDLER"] = handler
        app = ["--pythonpath", str(BENCH), "handler_modes:create_app()"]
    master = _start([*settings.args(port), *app], env, log_path, ROOT)
    worker = None
    try:
        if worker_process:
            worker_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")])))
            worker = _start([str(BIN / "flask"), "--app", "handler_modes:create_app" if handler else "app", "worker"],
                            worker_env, workdir / f"{name.replace(' ', '-')}-worker.log", ROOT)
        _wait_ready(port, master, log_path)
        yield Server(name, port, master, database_url=database_url, worker=worker, log_path=log_path)
    finally:
        _stop(master)
        if worker is not None:
            _stop(worker)
