"""Starting and stopping what is measured: gunicorn serving the bare handler or the project, the
separate worker process, and a fresh database for each run. Every child is stopped on the way out.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import callbacks
import sqlalchemy

from receiver.storage import unreachable_reason

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Gunicorn:
    """gunicorn's worker class and counts; None leaves a setting to the served tree's gunicorn.conf.py."""

    workers: int | None = None
    worker_class: str | None = None
    threads: int | None = None

    def flags(self) -> list[str]:
        given = (("--workers", self.workers), ("--worker-class", self.worker_class), ("--threads", self.threads))
        return [part for flag, value in given if value is not None for part in (flag, str(value))]

    def over(self, base: "Gunicorn") -> "Gunicorn":
        """These settings where given, `base`'s elsewhere."""
        return Gunicorn(*(mine if mine is not None else theirs for mine, theirs in
                          ((self.workers, base.workers), (self.worker_class, base.worker_class),
                           (self.threads, base.threads))))

    def __str__(self) -> str:
        return " ".join(["gunicorn", *self.flags()]).replace("--workers", "-w").replace("--worker-class", "-k")


def configured(root: Path = ROOT) -> Gunicorn:
    """The worker class and counts a tree's gunicorn.conf.py sets (gunicorn's defaults where it sets none)."""
    conf = runpy.run_path(str(root / "gunicorn.conf.py"))
    return Gunicorn(int(conf.get("workers", 1)), str(conf.get("worker_class", "sync")), int(conf.get("threads", 1)))


@dataclass
class Server:
    name: str
    port: int
    master: subprocess.Popen
    database_url: str | None = None  # the project's, where the benchmark reads its backlog and lag
    worker: subprocess.Popen | None = None  # the separate `flask worker` process, if any
    log_path: Path | None = None
    postgres_database: str | None = None  # whose PostgreSQL backends' CPU counts for this server

    def web_pids(self) -> list[int]:
        """The gunicorn worker processes (children of the master)."""
        return children(self.master.pid)


def postgres_name(database_url: str) -> str | None:
    return database_url.rsplit("/", 1)[1] if database_url.startswith("postgres") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def start_process(args: list[str], env: dict, log_path: Path, cwd: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        # Own session: stopping it signals exactly this process group, nothing else.
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def stop_process(process: subprocess.Popen, grace: float = 40.0) -> None:
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


def _wait_ready(port: int, process: subprocess.Popen, log_path: Path, timeout: float = 30.0,
                path: str = "/healthz") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log_path}:\n{log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready after {timeout:.0f}s; see {log_path}")


def gunicorn_command(port: int, settings: Gunicorn, root: Path | None) -> list[str]:
    """gunicorn on 127.0.0.1:`port`, with `root`'s gunicorn.conf.py (None: no config file) and `settings` on top."""
    config = ["--config", str(root / "gunicorn.conf.py")] if root else []
    return [str(BIN / "gunicorn"), *config, "--bind", f"127.0.0.1:{port}", *settings.flags()]


@contextlib.contextmanager
def fresh_database(database: str, workdir: Path, *, link=None):
    """A database URL nobody has used yet: a file in `workdir` ("sqlite"), or a new database on the
    local PostgreSQL ("postgres"), reached through `link` (a linkproxy.Link) for "postgres-link"."""
    if database == "sqlite":
        path = workdir / f"receiver-{uuid.uuid4().hex[:8]}.sqlite3"
        try:
            yield f"sqlite:///{path}"
        finally:  # these files grow to hundreds of MB over a long run
            for suffix in ("", "-wal", "-shm", ".writer-lock"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        yield link.url_for(url) if database == "postgres-link" else url
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


def _metrics_dir(workdir: Path, port: int) -> str:
    """Where gunicorn.conf.py keeps Prometheus counters: in `workdir`, so they go when it does."""
    return str(workdir / f"metrics-{port}")


def _log_path(workdir: Path, name: str) -> Path:
    return workdir / (re.sub(r"[^A-Za-z0-9+.-]+", "-", name) + ".log")


@contextlib.contextmanager
def serve_bare(settings: Gunicorn, workdir: Path):
    """gunicorn serving bench/bare.py, with the project's gunicorn.conf.py and `settings` on top."""
    port, log_path = free_port(), _log_path(workdir, "bare")
    args = [*gunicorn_command(port, settings, ROOT), "--pythonpath", str(BENCH), "bare:create_app()"]
    # WORKER_IN_WEB=false: the bare snippet has no worker, so no process is spent on one.
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=_metrics_dir(workdir, port), WORKER_IN_WEB="false")
    master = start_process(args, env, log_path, ROOT)
    try:
        _wait_ready(port, master, log_path)
        yield Server("bare", port, master, log_path=log_path)
    finally:
        stop_process(master)


@contextlib.contextmanager
def serve_naive(settings: Gunicorn, database_url: str, workdir: Path, name: str = "naive", module: str = "naive"):
    """gunicorn serving a reference receiver of bench/ (naive.py, complete.py) with `settings` and no config
    file, as a user starts it."""
    if database_url.startswith("postgresql"):  # naive.py hands DATABASE_URL to libpq, as users do
        database_url = sqlalchemy.engine.make_url(database_url).set(drivername="postgresql") \
            .render_as_string(hide_password=False)
    env = dict(os.environ, **callbacks.server_env(), DATABASE_URL=database_url)
    # The project root on the path only so a worker class of the project's (a dotted path) can load.
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT)])
    port, log_path = free_port(), _log_path(workdir, name)
    # Create the table once before several workers race to (as the project's `flask init-db` does).
    subprocess.run([sys.executable, "-c", f"import {module}; {module}.create_app()"], cwd=BENCH, env=env, check=True,
                   timeout=60, capture_output=True)
    master = start_process([*gunicorn_command(port, settings, None), f"{module}:create_app()"], env, log_path, BENCH)
    try:
        _wait_ready(port, master, log_path, path="/webhooks/inbound-sms")
        yield Server(name, port, master, log_path=log_path, postgres_database=postgres_name(database_url))
    finally:
        stop_process(master)


def project_env(database_url: str, *, worker_in_web: bool = True, root: Path = ROOT) -> dict[str, str]:
    return dict(os.environ, **callbacks.server_env(), DATABASE_URL=database_url, PYTHONPATH=str(root),
                WORKER_IN_WEB="true" if worker_in_web else "false", APP_ENV="production")


def init_database(database_url: str, root: Path = ROOT) -> None:
    """Bring the schema up to date once, the project's release step, before several processes race to.
    A tree without that command migrates when its app starts."""
    done = subprocess.run([str(BIN / "flask"), "--app", "app", "init-db"], cwd=root,
                          env=project_env(database_url, root=root), timeout=120, capture_output=True, text=True)
    if done.returncode and "No such command" not in done.stderr:
        raise RuntimeError(f"flask init-db failed in {root}:\n{done.stderr[-2000:]}")


@contextlib.contextmanager
def serve_project(settings: Gunicorn, database_url: str, workdir: Path, *, root: Path = ROOT, name: str = "project",
                  worker_process: bool = False, handler: str | None = None, env: dict | None = None):
    """gunicorn serving the project tree at `root` on `database_url`, with its gunicorn.conf.py and
    `settings` on top; with `worker_process`, the worker runs as `flask worker`; with `handler`
    ("sleep" or "raise", see handler_modes.py), every handler is replaced by that one."""
    if handler:
        name += f" ({handler} handler)"
    log_path = _log_path(workdir, name)
    env = {**project_env(database_url, worker_in_web=not worker_process, root=root), **(env or {})}
    init_database(database_url, root)
    app = ["app:create_app()"]
    if handler:
        env["BENCH_HANDLER"] = handler
        app = ["--pythonpath", str(BENCH), "handler_modes:create_app()"]
    port = free_port()
    env["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir(workdir, port)
    master = start_process([*gunicorn_command(port, settings, root), *app], env, log_path, root)
    worker = None
    try:
        if worker_process:
            worker_env = dict(env, PYTHONPATH=os.pathsep.join([str(BENCH), str(root)]))
            flask_app = "handler_modes:create_app" if handler else "app"
            worker = start_process([str(BIN / "flask"), "--app", flask_app, "worker"], worker_env,
                                   _log_path(workdir, name + "-worker"), root)
        _wait_ready(port, master, log_path)
        yield Server(name, port, master, database_url=database_url, worker=worker, log_path=log_path,
                     postgres_database=postgres_name(database_url))
    finally:
        stop_process(master)
        if worker is not None:
            stop_process(worker)
