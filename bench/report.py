"""The machine, the settings and the figures, as Markdown (printed, and kept in bench/results/latest.md)."""
from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import sqlalchemy

from load import Outcome
from observe import Lag

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServerResult:
    name: str
    database: str  # "-" for the bare handler
    full_speed: Outcome
    full_speed_other_cpu: float | None
    rate: float
    paced: Outcome | None = None
    paced_other_cpu: float | None = None
    lag: Lag | None = None
    backlog: tuple[int, int, float, bool] | None = None  # max, last, growth/s, bounded
    drained_after: float | None = None
    web_rss: list[float] = field(default_factory=list)
    worker_rss: float | None = None


def _first(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine(postgres_url: str | None) -> dict[str, str]:
    """What the figures were measured on."""
    mem_kib = _first("/proc/meminfo", "MemTotal").split()[0]
    info = {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": _first("/proc/cpuinfo", "model name"),
        "memory": f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else "?",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": "-",
        "packages": ", ".join(f"{p} {metadata.version(p)}" for p in ("gunicorn", "Flask", "Werkzeug", "SQLAlchemy", "psycopg")),
        "wrk": _run(["wrk", "--version"]).split("[")[0].strip() or "?",
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    if postgres_url:
        engine = sqlalchemy.create_engine(postgres_url)
        with engine.connect() as conn:
            info["PostgreSQL"] = conn.execute(sqlalchemy.text("SHOW server_version")).scalar_one()
        engine.dispose()
    head = _run(["git", "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT, capture_output=True).returncode
    info["project tree"] = head + (" + uncommitted changes" if dirty else "")
    return info


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render(info: dict[str, str], settings: dict[str, str], results: list[ServerResult],
           costs: dict[str, str], notes: list[str]) -> str:
    bare = next((r for r in results if r.name == "bare"), None)
    lines = ["# Benchmark: the receiver vs a bare Flask handler", ""]
    lines += [f"- **{k}**: {v}" for k, v in info.items()]
    lines += [""] + [f"- **{k}**: {v}" for k, v in settings.items()] + [""]

    lines += ["## Acknowledgement at full speed (wrk, closed loop)", ""]
    rows = []
    for r in results:
        o = r.full_speed
        ratio = f"{o.rps / bare.full_speed.rps:.2f}" if bare and r is not bare and bare.full_speed.rps else "-"
        repeats = f" ({o.wrapped} wrap)" if o.wrapped and r.name != "bare" else ""
        rows.append([r.name, r.database, f"{o.rps:,.0f}{repeats}", _ms(o.p50), _ms(o.p99), _ms(o.p999),
                     str(o.non_2xx), str(o.socket_errors), ratio, _cpu(r.full_speed_other_cpu)])
    lines += _table(["server", "database", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "non-2xx", "socket errors",
                     "project/bare", "other CPU load (cores)"], rows)

    paced = [r for r in results if r.paced]
    if paced:
        lines += ["", f"## At half the bare maximum ({paced[0].rate:,.0f} req/s, constant rate, latency from when "
                      "each request was due)", ""]
        rows = []
        for r in paced:
            o = r.paced
            backlog = "-"
            if r.backlog:
                peak, last, growth, bounded = r.backlog
                backlog = f"{peak:,} / {last:,} ({'bounded' if bounded else f'growing {growth:+.0f}/s'})"
            lag = r.lag
            rows.append([
                r.name, r.database, f"{o.rps:,.0f}", _ms(o.p50), _ms(o.p99), _ms(o.p999),
                f"{o.non_2xx} / {o.socket_errors}",
                _ms(lag.p50) if lag else "-", _ms(lag.p99) if lag else "-",
                f"{lag.unfinished:,}" if lag else "-", backlog,
                "-" if r.name == "bare" else (f"{r.drained_after:.0f} s" if r.drained_after is not None else "not drained"),
                _cpu(r.paced_other_cpu),
            ])
        lines += _table(["server", "database", "answered/s", "ack p50 ms", "ack p99 ms", "ack p99.9 ms",
                         "non-2xx / errors", "lag p50 ms", "lag p99 ms", "unfinished", "backlog max / end",
                         "drained after", "other CPU load (cores)"], rows)

    lines += ["", "## Peak memory (VmHWM)", ""]
    rows = [[r.name, r.database, ", ".join(f"{x:.0f}" for x in r.web_rss) or "-",
             "-" if r.worker_rss is None else f"{r.worker_rss:.0f}"] for r in results]
    lines += _table(["server", "database", "each web worker MiB", "`flask worker` process MiB"], rows)

    lines += ["", "## Costs without HTTP (this process, one caller)", ""]
    lines += _table(["what", "per call"], [[k, v] for k, v in costs.items()])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
