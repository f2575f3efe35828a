"""The machine, the settings and the figures, as Markdown (printed, and kept in bench/results/latest.md)."""
from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import sqlalchemy
from load import Outcome
from observe import Lag

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class PacedRun:
    """One constant-rate run; lag, backlog and drain only for the project."""

    name: str
    database: str
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


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render(info: dict[str, str], settings: dict[str, str], sections: list[list[str]], paced: list[PacedRun],
           costs: dict[str, str], notes: list[str], handler_runs: list[HandlerRun] = (),
           instructions: dict[str, float] | None = None) -> str:
    """The whole report; `sections` are Markdown lines already rendered (full speed, link, history)."""
    lines = ["# Benchmark: the receiver vs its references (bare snippet, careful naive receiver, other trees)", ""]
    lines += [f"- **{k}**: {v}" for k, v in info.items()]
    lines += [""] + [f"- **{k}**: {v}" for k, v in settings.items()] + [""]
    for section in sections:
        lines += section + [""]

    if paced:
        lines += ["## At a constant rate (latency counted from when each request was due, as wrk2 does)", ""]
        rows = []
        for run in paced:
            o, lag = run.outcome, run.lag
            backlog = "-"
            if run.backlog:
                peak, last, growth, bounded = run.backlog
                backlog = f"{peak:,} / {last:,} ({'bounded' if bounded else f'growing {growth:+.0f}/s'})"
            drained = "-" if lag is None else (f"{run.drained_after:.0f} s" if run.drained_after is not None
                                               else "not drained")
            rows.append([
                run.name, run.database, f"{run.rate:,.0f} ({run.why})", f"{o.rps:,.0f}", _ms(o.p50), _ms(o.p99),
                _ms(o.p999), f"{o.non_2xx} / {o.socket_errors}",
                _ms(lag.p50) if lag else "-", _ms(lag.p99) if lag else "-",
                f"{lag.unfinished:,}" if lag else "-", backlog, drained, _cpu(run.other_cpu),
            ])
        lines += table(["server", "database", "offered req/s", "answered/s", "ack p50 ms", "ack p99 ms",
                         "ack p99.9 ms", "non-2xx / unanswered", "lag p50 ms", "lag p99 ms", "unfinished",
                         "backlog max / end", "drained after", "other CPU load (cores)"], rows)

    if handler_runs:
        lines += ["", "## A slow or failing handler (the web command's worker, constant rate, "
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
        lines += table(["handler", "database", "offered req/s", "ack p50 ms", "ack p99 ms", "ack p99.9 ms",
                         "non-2xx / unanswered", "ack p99 vs the usual handlers (mean of their runs)",
                         "other CPU load (cores)"], rows)

    if instructions:
        lines += ["", "## Instructions per callback (callgrind: counted, not timed; in one process, "
                  "no HTTP, no worker)", ""]
        rows = [[server, f"{n:,.0f}", f"{n / instructions['bare']:.2f}"] for server, n in instructions.items()]
        lines += table(["server", "instructions per callback", "vs bare"], rows)

    lines += ["", "## Costs without HTTP (this process, one caller)", ""]
    lines += table(["what", "per call"], [[k, v] for k, v in costs.items()])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
