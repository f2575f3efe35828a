"""At a constant rate (open loop): acknowledgement latency for the bare handler and this tree's project,
and for the project the end-to-end lag and the backlog; then the project with a handler that sleeps
5 s or always raises. Each server starts on a fresh database, after the full-speed rounds.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import callbacks
import load
import observe
import refs
import report
import rounds
import servers


def paced_run(server: servers.Server, contender: refs.Contender, plan, rate: float, why: str,
              link=None) -> report.PacedRun:
    """Send at `rate` for plan.rate_duration; for the project, sample the backlog and read the lag."""
    url = server.database_url
    ours = (server.master.pid, server.worker.pid if server.worker else None)
    if url:  # start from an empty backlog
        observe.wait_drained(url, plan.drain_timeout)
    requests = callbacks.generate(int(rate * plan.rate_duration))
    since = time.time()
    sampler = observe.BacklogSampler(url) if url else contextlib.nullcontext()
    link_pid = link.pid if link and contender.database == "postgres-link" else None
    with sampler, observe.CpuMeter(*ours, postgres_database=server.postgres_database, link_pid=link_pid) as cpu:
        outcome = load.run_constant_rate(server.port, requests, rate, connections=plan.paced_connections)
    load.check_signing(outcome, contender.label)
    run = report.PacedRun(contender.name, contender.database, rate, why, outcome, cpu.other_cores)
    print(f"   {contender.label}: {rate:,.0f} req/s constant ({why}): ack p99 {outcome.p99 or 0:.1f} ms, "
          f"statuses {outcome.statuses}, unanswered {outcome.socket_errors}", flush=True)
    if url:
        run.backlog = sampler.verdict(rate)
        run.drained_after = observe.wait_drained(url, plan.drain_timeout)
        run.lag = observe.end_to_end_lag(url, since)
        print(f"     lag p50 {run.lag.p50 or 0:.0f} ms p99 {run.lag.p99 or 0:.0f} ms, backlog max {run.backlog[0]}, "
              f"drained after {run.drained_after or -1:.1f} s", flush=True)
    return run


def measure_paced(full_speed: list[rounds.FullSpeed], plan, workdir: Path, link=None) -> list[report.PacedRun]:
    """The bare handler at half its maximum; each project variant of this tree at half the bare maximum,
    and first at half its own maximum when that differs by more than 10% (the worker's goal is set
    there, and the backlog of a rate that overloads the project must not leak into it)."""
    grouped = rounds.by_contender(full_speed)
    bare = next(c for c in grouped if c.kind == "bare")
    half_bare = rounds.median_acks(grouped[bare]) / 2
    runs = []
    for contender, results in grouped.items():
        if contender.kind != "bare" and not (contender.is_project and contender.root == refs.ROOT):
            continue
        half_own = rounds.median_acks(results) / 2
        rates = [(half_own, "half its own maximum")] if abs(half_own - half_bare) > 0.1 * half_bare else []
        rates.append((half_bare, "half the bare maximum"))
        print(f"\n== {contender.label} at a constant rate", flush=True)
        with refs.serve(contender, workdir, link) as server:
            warm = load.run_constant_rate(server.port, callbacks.generate(int(rates[0][0] * plan.warmup)),
                                          rates[0][0], connections=plan.paced_connections)
            load.check_signing(warm, contender.label)
            runs += [paced_run(server, contender, plan, rate, why, link) for rate, why in rates]
    return runs


def measure_handlers(plan, overrides: servers.Gunicorn, database: str, rate: float,
                     workdir: Path) -> list[report.HandlerRun]:
    """Acknowledgement latency at `rate` with the usual handlers, one that sleeps 5 s, one that always
    raises, then the usual ones again (their spread shows the noise), each on a fresh database."""
    runs = []
    for handler in (None, "sleep", "raise", None):
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(servers.fresh_database(database, workdir))
            server = stack.enter_context(servers.serve_project(overrides, url, workdir, handler=handler))
            print(f"\n== {server.name} ({database}) on port {server.port}: {rate:,.0f} req/s constant", flush=True)
            warm = load.run_constant_rate(server.port, callbacks.generate(int(rate * plan.warmup)), rate,
                                          connections=plan.paced_connections)
            load.check_signing(warm, server.name)
            with observe.CpuMeter(server.master.pid, postgres_database=server.postgres_database) as cpu:
                outcome = load.run_constant_rate(server.port, callbacks.generate(int(rate * plan.rate_duration)), rate,
                                                 connections=plan.paced_connections)
            load.check_signing(outcome, server.name)
            print(f"   ack p99 {outcome.p99 or 0:.1f} ms, statuses {outcome.statuses}", flush=True)
            runs.append(report.HandlerRun(handler or "usual", database, rate, outcome, cpu.other_cores))
    return runs
