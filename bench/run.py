"""Benchmark the receiver against a bare Flask handler, under the same gunicorn, on this machine.

    .venv/bin/python bench/run.py [--quick] [--backend sqlite|postgres|both]

Starts each server on loopback with a fresh database, replays distinct signed callbacks with wrk,
then sends at half the bare maximum at a constant rate, and prints (and saves to
bench/results/latest.md) one Markdown report. Every process it starts is stopped before it exits.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import callbacks  # noqa: E402  (bench/ and the project root must be on the path first)
import hotspots  # noqa: E402
import instructions  # noqa: E402
import load  # noqa: E402
import micro  # noqa: E402
import observe  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402

RESULTS = BENCH / "results"


@dataclass(frozen=True)
class Plan:
    warmup: float  # seconds of wrk before each measurement, with requests of its own
    duration: float  # seconds of wrk at full speed
    rate_duration: float  # seconds at half the bare maximum
    drain_timeout: float  # how long the project may take to finish its backlog
    wrk_threads: int
    connections: int
    paced_connections: int
    settle: float = 20.0  # seconds of unmeasured load before the first measurement

    @classmethod
    def from_args(cls, args) -> "Plan":
        paced = 0 if args.full_speed_only else None
        if args.quick:
            return cls(2, 5, 15 if paced is None else 0, 30, args.wrk_threads, args.connections, 64)
        return cls(3, 15, 60 if paced is None else 0, 90, args.wrk_threads, args.connections, 64)


def _pg_name(server: servers.Server) -> str | None:
    url = server.database_url or ""
    return url.rsplit("/", 1)[1] if url.startswith("postgresql") else None


class SigningMismatch(SystemExit):
    pass


def check(outcome: load.Outcome, name: str) -> None:
    """A 401 means our signatures do not match the server's settings: every figure would be wrong."""
    if outcome.statuses.get(401):
        raise SigningMismatch(
            f"\n{name} answered 401 to {outcome.statuses[401]} requests: the benchmark signs callbacks in a way "
            f"the server refuses (secret, SMS method or time window). First answers: {outcome.first_errors}"
        )


def measure(server: servers.Server, database: str, plan: Plan, workdir: Path, *, expected_rps: float,
            rate: float | None = None, profile: bool = False, label: str | None = None) -> report.ServerResult:
    """Warm up, run wrk at full speed, then send at `rate` (default: half of what full speed reached)."""
    label = label or server.name
    tag = f"{label}-{database}".replace("+", "-").replace(" ", "-")
    url = server.database_url
    ours = (server.master.pid, server.worker.pid if server.worker else None)
    print(f"\n== {label} ({database}) on port {server.port}", flush=True)

    def replay_file(name: str, count: int) -> str:
        return callbacks.write_slices(callbacks.generate(count), workdir, f"{tag}-{name}", plan.wrk_threads)

    warm = replay_file("warm", int(plan.warmup * expected_rps))
    full = replay_file("full", int(plan.duration * expected_rps * 1.3))
    check(load.run_wrk(server.port, warm, plan.warmup, threads=plan.wrk_threads, connections=plan.connections),
          server.name)
    if url:
        observe.wait_drained(url, plan.drain_timeout)

    spies = {}
    if profile and url and hotspots.available():
        targets = {"web": server.web_pids()[0], "worker": server.worker.pid if server.worker else None}
        spies = {part: hotspots.start(pid, plan.duration, workdir / f"{tag}-{part}.spy")
                 for part, pid in targets.items() if pid}
    with observe.CpuMeter(*ours, postgres_database=_pg_name(server)) as cpu:
        full_speed = load.run_wrk(server.port, full, plan.duration, threads=plan.wrk_threads,
                                  connections=plan.connections)
    check(full_speed, server.name)
    print(f"   full speed: {full_speed.rps:,.0f} req/s, p99 {full_speed.p99:.1f} ms, statuses {full_speed.statuses}",
          flush=True)
    for part, spy in spies.items():
        spy.wait(plan.duration + 30)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"profile-{tag}-{part}.txt").write_text(hotspots.summarise(workdir / f"{tag}-{part}.spy"))
    result = report.ServerResult(label, database, full_speed, cpu.other_cores,
                                 cpu_ms=tuple(1000 * s / max(1, full_speed.requests) for s in
                                              (cpu.web_seconds, cpu.worker_seconds, cpu.postgres_seconds)))
    if plan.rate_duration:
        half_bare = rate or full_speed.rps / 2
        if url and abs(full_speed.rps / 2 - half_bare) > 0.1 * half_bare:
            # The worker's goal is set at half the project's own maximum: measure it there first,
            # so the backlog of a rate that overloads the project cannot leak into it.
            result.paced.append(paced_run(server, database, plan, full_speed.rps / 2, "half its own maximum"))
        result.paced.append(paced_run(server, database, plan, half_bare, "half the bare maximum"))

    result.web_rss = [x for x in map(observe.peak_rss_mib, server.web_pids()) if x is not None]
    if server.worker:
        result.worker_rss = observe.peak_rss_mib(server.worker.pid)
    return result


def paced_run(server: servers.Server, database: str, plan: Plan, rate: float, why: str) -> report.PacedRun:
    """Send at `rate` for plan.rate_duration; for the project, sample the backlog and read the lag."""
    url = server.database_url
    ours = (server.master.pid, server.worker.pid if server.worker else None)
    if url:  # start from an empty backlog
        observe.wait_drained(url, plan.drain_timeout)
    requests = callbacks.generate(int(rate * plan.rate_duration))
    since = time.time()
    sampler = observe.BacklogSampler(url) if url else contextlib.nullcontext()
    with sampler, observe.CpuMeter(*ours, postgres_database=_pg_name(server)) as cpu:
        outcome = load.run_constant_rate(server.port, requests, rate, connections=plan.paced_connections)
    check(outcome, server.name)
    run = report.PacedRun(rate, why, outcome, cpu.other_cores)
    print(f"   {rate:,.0f} req/s constant ({why}): ack p99 {outcome.p99 or 0:.1f} ms, "
          f"statuses {outcome.statuses}, unanswered {outcome.socket_errors}", flush=True)
    if url:
        run.backlog = sampler.verdict(rate)
        run.drained_after = observe.wait_drained(url, plan.drain_timeout)
        run.lag = observe.end_to_end_lag(url, since)
        print(f"   lag p50 {run.lag.p50 or 0:.0f} ms p99 {run.lag.p99 or 0:.0f} ms, backlog max {run.backlog[0]}, "
              f"drained after {run.drained_after}", flush=True)
    return run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="5 s at full speed, 15 s at constant rate")
    p.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both",
                   help="both (default) skips PostgreSQL with a note when it does not answer")
    p.add_argument("--worker", choices=("thread", "process", "both"), default="both",
                   help="the project's worker as a thread of each web process (default setting), "
                        "as its own `flask worker` process, or both")
    p.add_argument("--workers", type=int, default=2, help="gunicorn --workers (both servers)")
    p.add_argument("--worker-class", default="gthread", choices=("sync", "gthread"))
    p.add_argument("--threads", type=int, default=8, help="gunicorn --threads, for gthread")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--full-speed-only", action="store_true", help="skip the constant-rate runs (to compare settings)")
    p.add_argument("--no-handlers", action="store_true",
                   help="skip the runs with a handler that sleeps 5 s and one that always raises")
    p.add_argument("--no-instructions", action="store_true",
                   help="skip counting instructions per callback with valgrind (about 2 minutes)")
    p.add_argument("--profile", action="store_true",
                   help="sample one project web worker with py-spy (pip install py-spy) during full speed")
    return p.parse_args(argv)


def describe(plan: Plan, settings: servers.Gunicorn) -> dict[str, str]:
    return {
        "gunicorn": f"the project's gunicorn.conf.py with `{settings}` (both servers)",
        "load": f"wrk -t{plan.wrk_threads} -c{plan.connections}, {plan.warmup:g} s warm-up then {plan.duration:g} s; "
                f"constant rate for {plan.rate_duration:g} s over up to {plan.paced_connections} connections",
        "callbacks": "distinct and signed, never repeated: " + ", ".join(
            f"{w}% {kind} ({via})" for w, kind, via in callbacks.MIX),
        "durability": "SQLite WAL synchronous=FULL; PostgreSQL synchronous_commit=on (project defaults)",
    }


def measure_all(plan: Plan, settings: servers.Gunicorn, backends: list[str], variants: list[bool],
                workdir: Path, *, profile: bool) -> list[report.ServerResult]:
    """The bare handler, then each backend and worker variant of the project, each followed by the
    bare handler again at full speed only.

    This machine's speed drifts by tens of percent within minutes, so each project run is
    compared with the bare runs just before and after it rather than with one bare figure.
    """
    with servers.serve_bare(settings, workdir) as server:
        # The first half minute of load runs markedly slower on this machine (a bare run at the
        # start measured less than half of one a minute later): let it settle first, unmeasured.
        print(f"\n== settling the machine: {plan.settle:g} s of load, not measured", flush=True)
        settle = callbacks.write_slices(callbacks.generate(int(plan.settle * 10000)), workdir, "settle", plan.wrk_threads)
        load.run_wrk(server.port, settle, plan.settle, threads=plan.wrk_threads, connections=plan.connections)
        bare = measure(server, "-", plan, workdir, expected_rps=3000)
    results = [bare]
    previous = bare
    for backend in backends:
        for worker_process in variants:
            with contextlib.ExitStack() as stack:
                url = stack.enter_context(servers.fresh_database(backend, workdir))
                server = stack.enter_context(servers.serve_project(settings, url, workdir, worker_process=worker_process))
                project = measure(server, backend, plan, workdir, rate=bare.full_speed.rps / 2, profile=profile,
                                  expected_rps=max(500.0, bare.full_speed.rps))
            with servers.serve_bare(settings, workdir) as server:
                again = measure(server, "-", replace(plan, rate_duration=0), workdir, expected_rps=3000,
                                label="bare (again)")
            project.adjacent_bare = (previous.full_speed.rps, again.full_speed.rps)
            results += [project, again]
            previous = again
    return results


def measure_handlers(plan: Plan, settings: servers.Gunicorn, backend: str, rate: float,
                     workdir: Path) -> list[report.HandlerRun]:
    """Acknowledgement latency at `rate` with the usual handlers, one that sleeps 5 s, one that always
    raises, then the usual ones again (their spread shows the noise), each on a fresh database."""
    runs = []
    for handler in (None, "sleep", "raise", None):
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(servers.fresh_database(backend, workdir))
            server = stack.enter_context(servers.serve_project(settings, url, workdir, handler=handler))
            print(f"\n== {server.name} ({backend}) on port {server.port}: {rate:,.0f} req/s constant", flush=True)
            warm = load.run_constant_rate(server.port, callbacks.generate(int(rate * plan.warmup)), rate,
                                          connections=plan.paced_connections)
            check(warm, server.name)
            with observe.CpuMeter(server.master.pid, postgres_database=_pg_name(server)) as cpu:
                outcome = load.run_constant_rate(server.port, callbacks.generate(int(rate * plan.rate_duration)), rate,
                                                 connections=plan.paced_connections)
            check(outcome, server.name)
            print(f"   ack p99 {outcome.p99 or 0:.1f} ms, statuses {outcome.statuses}", flush=True)
            runs.append(report.HandlerRun(handler or "usual", backend, rate, outcome, cpu.other_cores))
    return runs


def measure_costs(backends: list[str], workdir: Path, fsync_before: tuple[float, float]) -> dict[str, str]:
    costs = {name: f"{us:,.1f} µs" for name, us in micro.signature_costs().items()}
    for backend in backends:
        with servers.fresh_database(backend, workdir) as url:
            costs[f"record_event, {backend} (one durable commit)"] = f"{micro.storage_cost(url):,.0f} µs"
        with servers.fresh_database(backend, workdir) as url:
            costs[f"one worker loop draining 3,000 stored callbacks, {backend}"] = \
                f"{micro.worker_rate(url):,.0f} events/s"
    fsync_after = micro.fsync_latency_us(str(workdir))
    costs["write 4 KiB + fsync in the SQLite directory, p50 / p99 (start of run)"] = \
        f"{fsync_before[0]:,.0f} / {fsync_before[1]:,.0f} µs"
    costs["same, end of run"] = f"{fsync_after[0]:,.0f} / {fsync_after[1]:,.0f} µs"
    return costs


def _interrupted(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = Plan.from_args(args)
    load.require_wrk()
    for signum in (signal.SIGINT, signal.SIGTERM):  # so every `with` below stops what it started
        signal.signal(signum, _interrupted)
    settings = servers.Gunicorn(args.workers, args.worker_class, args.threads)
    notes = []

    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends and (problem := servers.postgres_problem()):
        if args.backend == "postgres":
            raise SystemExit(f"PostgreSQL does not answer at {servers.PG_ADMIN_URL}: {problem}")
        backends.remove("postgres")
        notes.append(f"PostgreSQL skipped: {problem}")
    variants = {"thread": [False], "process": [True], "both": [False, True]}[args.worker]

    info = report.machine(servers.PG_ADMIN_URL if "postgres" in backends else None)
    shown = describe(plan, settings)
    print("\n".join(f"{k}: {v}" for k, v in {**info, **shown}.items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="receiver-bench-") as tmp:
        fsync_before = micro.fsync_latency_us(tmp)
        results = measure_all(plan, settings, backends, variants, Path(tmp), profile=args.profile)
        handler_runs = []
        if plan.rate_duration and not args.no_handlers:
            for backend in backends:
                own = next(r for r in results if r.database == backend)  # the worker-thread variant comes first
                handler_runs += measure_handlers(plan, settings, backend, own.full_speed.rps / 2, Path(tmp))
        costs = measure_costs(backends, Path(tmp), fsync_before)
        counted = None
        if args.no_instructions:
            pass
        elif instructions.available():
            print("\n== instructions per callback, under callgrind", flush=True)
            counted = instructions.per_callback()
        else:
            notes.append("instructions per callback not counted: valgrind is not installed")

    notes.append("other CPU load: cores busy with something other than the benchmark's own processes during "
                 "the measurement (the machine may be shared); figures taken while it is high are noisy.")
    markdown = report.render(info, shown, results, costs, notes, handler_runs, counted)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(markdown)
    print("\n" + markdown)
    print(f"(written to {RESULTS / 'latest.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
