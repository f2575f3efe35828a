"""CPU instructions per callback, bare handler vs project, counted by valgrind (callgrind), not timed.

    .venv/bin/python bench/instructions.py        (or bench/run.py --instructions)

Timings on a shared machine drift by tens of percent; an instruction count does not. Each server
handles the same signed callbacks in this process through its WSGI app (no HTTP, no gunicorn):
the project verifies, stores in a SQLite file with the durable settings and answers, its
committer thread included; the bare handler reads the callback and answers. Each is counted
twice, with two numbers of requests after the same warm-up, and the difference divided by the
extra requests, so start-up and imports cancel out. User-space instructions only: the kernel's
work (fsync, thread wake-ups) is not in the count, and neither is the worker's.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WARMUP, FEW, MANY = 200, 20, 420


def available() -> bool:
    return shutil.which("valgrind") is not None


def _environ(raw: bytes) -> dict:
    """A WSGI environ for one raw HTTP request from callbacks.generate."""
    from werkzeug.test import EnvironBuilder

    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers.pop("Content-Length", None)
    content_type = headers.pop("Content-Type", None)
    path, _, query = target.partition("?")
    environ = EnvironBuilder(path=path, method=method, query_string=query, headers=headers, data=body or None,
                             content_type=content_type).get_environ()
    environ["bench.body"] = environ["wsgi.input"].read()
    return environ


def serve_in_process(server: str, count: int) -> None:
    """Handle WARMUP + count callbacks with `server` ("bare" or "project"); run under callgrind."""
    sys.path[:0] = [str(BENCH), str(BENCH.parent)]
    import logging

    import callbacks

    environs = [_environ(raw) for raw in callbacks.generate(WARMUP + count, seed=1)]
    if server == "bare":
        import bare

        app = bare.create_app()
    else:
        from app import create_app

        os.environ.update(callbacks.server_env())
        folder = tempfile.mkdtemp(prefix="receiver-instructions-")
        app = create_app({"DATABASE_URL": f"sqlite:///{folder}/receiver.sqlite3", "INSTANCE_PATH": folder,
                          "WORKER_IN_WEB": False})
        for handler in logging.getLogger().handlers:  # one JSON line per callback, written nowhere
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(open(os.devnull, "w"))

    def start_response(status, headers, exc_info=None):
        start_response.status = status

    for environ in environs:
        environ = dict(environ, **{"wsgi.input": io.BytesIO(environ["bench.body"])})
        for _ in app(environ, start_response):
            pass
        if not start_response.status.startswith("200"):
            raise SystemExit(f"{server} answered {start_response.status}")


def _count(server: str, requests: int) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--serve", server, str(requests)],
        capture_output=True, text=True, timeout=900,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run of {server} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_callback() -> dict[str, float]:
    """Instructions per callback for "bare" and "project"."""
    return {server: (_count(server, MANY) - _count(server, FEW)) / (MANY - FEW) for server in ("bare", "project")}


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve_in_process(sys.argv[2], int(sys.argv[3]))
        return 0
    if not available():
        raise SystemExit("valgrind is not installed: apt-get install -y valgrind")
    counts = per_callback()
    for server, n in counts.items():
        print(f"{server}: {n:,.0f} instructions per callback")
    print(f"project/bare: {counts['project'] / counts['bare']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
