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
class PacedRun:
    """One constant-rate run; lag, backlog and drain only for the project."""

    rate: float
    why: str  # "half the bare maximum", "half its own maximum"
    outcome: Outcome
    other_cpu: float | None
    lag: Lag | None = None
    backlog: tuple[int, int, float, bool] | None = None  # max, last, growth/s, bounded
    drained_after: float | None = None


@dataclass
class HandlerRun:
    """The project at a constant rate with its usual handlers, or with every handler sleeping 5 s or raising."""

    handler: str  # "usual", "sleep", "raise"
    database: str
    rate: float
    outcome: Outcome
    other_cpu: float | None


@dataclass
class ServerResult:
    name: str
    database: str  # "-" for the bare handler
    full_speed: Outcome
    full_speed_other_cpu: float | None
    cpu_ms: tuple[float, ...] = (0.0, 0.0, 0.0)  # CPU per request at full speed: web, `flask worker`, PostgreSQL
    paced: list[PacedRun] = field(default_factory=list)
    web_rss: list[float] = field(default_factory=list)
    worker_rss: float | None = None
    adjacent_bare: tuple[float, float] | None = None  # the bare runs' req/s just before and after this one


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
           costs: dict[str, str], notes: list[str], handler_runs: list[HandlerRun] = (),
           instructions: dict[str, float] | None = None) -> str:
    bare_rps = [r.full_speed.rps for r in results if r.name.startswith("bare")]
    bare_mean = sum(bare_rps) / len(bare_rps) if bare_rps else 0.0
    lines = ["# Benchmark: the receiver vs a bare Flask handler", ""]
    lines += [f"- **{k}**: {v}" for k, v in info.items()]
    lines += [""] + [f"- **{k}**: {v}" for k, v in settings.items()] + [""]

    lines += ["## Acknowledgement at full speed (wrk, closed loop)", ""]
    rows = []
    for r in results:
        o = r.full_speed
        reference = sum(r.adjacent_bare) / 2 if r.adjacent_bare else bare_mean
        ratio = f"{o.rps / reference:.2f}" if reference and not r.name.startswith("bare") else "-"
        repeats = f" ({o.wrapped} wrap)" if o.wrapped and not r.name.startswith("bare") else ""
        web_ms, worker_ms, pg_ms = r.cpu_ms
        cpu = " + ".join([f"{web_ms:.2f}"] + ([f"{worker_ms:.2f}"] if worker_ms else [])
                         + ([f"{pg_ms:.2f}"] if r.database == "postgres" else []))
        rows.append([r.name, r.database, f"{o.rps:,.0f}{repeats}", _ms(o.p50), _ms(o.p99), _ms(o.p999),
                     str(o.non_2xx), str(o.socket_errors), ratio, cpu, _cpu(r.full_speed_other_cpu)])
    lines += _table(["server", "database", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "non-2xx", "socket errors",
                     "project/bare (mean of the bare runs just before and after)", "CPU ms per request (web [+ flask worker] [+ PostgreSQL])",
                     "other CPU load (cores)"], rows)

    runs = [(r, run) for r in results for run in r.paced]
    if runs:
        lines += ["", "## At a constant rate (latency counted from when each request was due, as wrk2 does)", ""]
        rows = []
        for r, run in runs:
            o, lag = run.outcome, run.lag
            backlog = "-"
            if run.backlog:
                peak, last, growth, bounded = run.backlog
                backlog = f"{peak:,} / {last:,} ({'bounded' if bounded else f'growing {growth:+.0f}/s'})"
            drained = "-" if lag is None else (f"{run.drained_after:.0f} s" if run.drained_after is not None
                                               else "not drained")
            rows.append([
                r.name, r.database, f"{run.rate:,.0f} ({run.why})", f"{o.rps:,.0f}", _ms(o.p50), _ms(o.p99),
                _ms(o.p999), f"{o.non_2xx} / {o.socket_errors}",
                _ms(lag.p50) if lag else "-", _ms(lag.p99) if lag else "-",
                f"{lag.unfinished:,}" if lag else "-", backlog, drained, _cpu(run.other_cpu),
            ])
        lines += _table(["server", "database", "offered req/s", "answered/s", "ack p50 ms", "ack p99 ms",
                         "ack p99.9 ms", "non-2xx / unanswered", "lag p50 ms", "lag p99 ms", "unfinished",
                         "backlog max / end", "drained after", "other CPU load (cores)"], rows)

    if handler_runs:
        lines += ["", "## A slow or failing handler (worker thread in the web processes, constant rate, "
                  "half the project's own maximum)", ""]
        rows = []
        for run in handler_runs:
            usual = [h.outcome.p99 for h in handler_runs
                     if h.database == run.database and h.handler == "usual" and h.outcome.p99]
            baseline = sum(usual) / len(usual) if usual else None
            o = run.outcome
            change = f"{100 * (o.p99 / baseline - 1):+.0f}%" if baseline and o.p99 and run.handler != "usual" else "-"
            handler = {"usual": "the usual handlers", "sleep": "every handler sleeps 5 s",
                       "raise": "every handler raises"}[run.handler]
            rows.append([handler, run.database, f"{run.rate:,.0f}", _ms(o.p50), _ms(o.p99), _ms(o.p999),
                         f"{o.non_2xx} / {o.socket_errors}", change, _cpu(run.other_cpu)])
        lines += _table(["handler", "database", "offered req/s", "ack p50 ms", "ack p99 ms", "ack p99.9 ms",
                         "non-2xx / unanswered", "ack p99 vs the usual handlers (mean of their runs)",
                         "other CPU load (cores)"], rows)

    lines += ["", "## Peak memory (VmHWM)", ""]
    rows = [[r.name, r.database, ", ".join(f"{x:.0f}" for x in r.web_rss) or "-",
             "-" if r.worker_rss is None else f"{r.worker_rss:.0f}"] for r in results]
    lines += _table(["server", "database", "each web worker MiB", "`flask worker` process MiB"], rows)

    if instructions:
        lines += ["", "## Instructions per callback (callgrind: counted, not timed; in one process, "
                  "no HTTP, no worker)", ""]
        rows = [[server, f"{n:,.0f}", f"{n / instructions['bare']:.2f}"] for server, n in instructions.items()]
        lines += _table(["server", "instructions per callback", "vs bare"], rows)

    lines += ["", "## Costs without HTTP (this process, one caller)", ""]
    lines += _table(["what", "per call"], [[k, v] for k, v in costs.items()])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
