"""What is measured side by side, one Contender per row: the bare snippet, the careful naive receiver
run two ways, the project, and other trees of the project, each on each database.

The naive receiver runs as a user starts it (`gunicorn -w 2`, sync workers) and under the project's
own gunicorn settings (worker class and counts read from its gunicorn.conf.py, not assumed).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import servers
from servers import Gunicorn

ROOT = Path(__file__).resolve().parent.parent
DATABASES = ("sqlite", "postgres", "postgres-link")
USER_DEFAULT = Gunicorn(workers=2)  # `gunicorn -w 2 app:app`: what the tutorials start (sync workers)


@dataclass(frozen=True)
class Contender:
    name: str  # bare, naive-*, complete-*, project, project+worker, tree REV, tree REV+worker
    database: str  # "-" (bare) or one of DATABASES
    kind: str  # bare, naive (stores only), complete (the whole job in the request), project
    gunicorn: Gunicorn  # naive: all its settings; bare, project: what goes on top of gunicorn.conf.py
    root: Path = ROOT  # project: the tree it serves
    worker_process: bool = False  # project: the worker as its own `flask worker` process

    @property
    def label(self) -> str:
        return self.name if self.database == "-" else f"{self.name} ({self.database})"

    @property
    def is_project(self) -> bool:
        return self.kind == "project"


def contenders(databases: list[str], variants: list[bool], trees, overrides: Gunicorn) -> list[Contender]:
    """Every contender, bare first; `trees` are trees.Tree; `overrides` are the command line's gunicorn settings."""
    threaded = overrides.over(servers.configured(ROOT))
    out = [Contender("bare", "-", "bare", overrides)]
    for database in databases:
        out += [Contender("naive-sync", database, "naive", USER_DEFAULT),
                Contender("naive-threaded", database, "naive", threaded),
                Contender("complete-sync", database, "complete", USER_DEFAULT),
                Contender("complete-threaded", database, "complete", threaded)]
        for name, root in [("project", ROOT)] + [(t.name, t.root) for t in trees]:
            out += [Contender(name + ("+worker" if process else ""), database, "project", overrides, root, process)
                    for process in variants]
    return out


def commands(overrides: Gunicorn) -> dict[str, str]:
    """How each kind of server is started, for the report."""
    project = ("gunicorn -c gunicorn.conf.py " + " ".join(overrides.flags())).strip()
    return {
        "bare": f"{project} 'bare:create_app()' (the project's settings: "
                f"{overrides.over(servers.configured(ROOT))})",
        "naive-sync": f"{USER_DEFAULT} 'naive:create_app()' (no config file: a user's default)",
        "naive-threaded": f"{overrides.over(servers.configured(ROOT))} 'naive:create_app()' "
                          "(the worker class and counts of the project's gunicorn.conf.py)",
        "complete-sync": f"{USER_DEFAULT} 'complete:create_app()' (bench/complete.py: the whole job in the request)",
        "complete-threaded": f"{overrides.over(servers.configured(ROOT))} 'complete:create_app()'",
        "project, tree REV": f"{project} 'app:create_app()', each from its own tree, with its own gunicorn.conf.py",
        "+worker": "the same, with WORKER_IN_WEB=false and a `flask worker` process",
    }


@contextlib.contextmanager
def serve(contender: Contender, workdir: Path, link=None):
    """Start `contender` on a fresh database; stop it and drop the database on the way out."""
    if contender.kind == "bare":
        with servers.serve_bare(contender.gunicorn, workdir) as server:
            yield server
        return
    with servers.fresh_database(contender.database, workdir, link=link) as url:
        if contender.kind in ("naive", "complete"):
            server = servers.serve_naive(contender.gunicorn, url, workdir, contender.label, module=contender.kind)
        else:
            server = servers.serve_project(contender.gunicorn, url, workdir, root=contender.root,
                                           name=contender.label, worker_process=contender.worker_process)
        with server as started:
            yield started
