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
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import callbacks  # noqa: E402  (bench/ and the project root must be on the path first)
import hotspots  # noqa: E402
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

    @classmethod
    def from_args(cls, args) -> "Plan":
        if args.quick:
            return cls(2, 5, 15, 30, args.wrk_threads, args.connections, 64)
        return cls(3, 15, 60, 90, args.wrk_threads, args.connections, 64)


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
            rate: float | None = None, profile: bool = False) -> report.ServerResult:
    """Warm up, run wrk at full speed, then send at `rate` (default: half of what full speed reached)."""
    tag = f"{server.name}-{database}".replace("+", "-")
    url = server.database_url
    ours = [server.master.pid] + ([server.worker.pid] if server.worker else [])
    print(f"\n== {server.name} ({database}) on port {server.port}", flush=True)

    def replay_file(name: str, count: int) -> str:
        return callbacks.write_slices(callbacks.generate(count), workdir, f"{tag}-{name}", plan.wrk_threads)

    warm = replay_file("warm", int(plan.warmup * expected_rps))
    full = replay_file("full", int(plan.duration * expected_rps * 1.3))
    check(load.run_wrk(server.port, warm, plan.warmup, threads=plan.wrk_threads, connections=plan.connections),
          server.name)
    if url:
        observe.wait_drained(url, plan.drain_timeout)

    spy = None
    if profile and url and hotspots.available():
        spy = hotspots.start(server.web_pids()[0], plan.duration, workdir / f"{tag}.spy")
    with observe.ForeignCpu(*ours, postgres=database == "postgres") as cpu:
        full_speed = load.run_wrk(server.port, full, plan.duration, threads=plan.wrk_threads,
                                  connections=plan.connections)
    check(full_speed, server.name)
    print(f"   full speed: {full_speed.rps:,.0f} req/s, p99 {full_speed.p99:.1f} ms, statuses {full_speed.statuses}",
          flush=True)
    if spy:
        spy.wait(plan.duration + 30)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"profile-{tag}.txt").write_text(hotspots.summarise(workdir / f"{tag}.spy"))
    result = report.ServerResult(server.name, database, full_speed, cpu.cores, rate or full_speed.rps / 2)

    if url:  # start the constant-rate run from an empty backlog
        observe.wait_drained(url, plan.drain_timeout)
    paced_requests = callbacks.generate(int(result.rate * plan.rate_duration))
    since = time.time()
    sampler = observe.BacklogSampler(url) if url else contextlib.nullcontext()
    with sampler, observe.ForeignCpu(*ours, postgres=database == "postgres") as cpu:
        result.paced = load.run_constant_rate(server.port, paced_requests, result.rate,
                                              connections=plan.paced_connections)
    result.paced_other_cpu = cpu.cores
    check(result.paced, server.name)
    print(f"   {result.rate:,.0f} req/s constant: ack p99 {result.paced.p99 or 0:.1f} ms, "
          f"statuses {result.paced.statuses}, errors {result.paced.socket_errors}", flush=True)
    if url:
        result.backlog = sampler.verdict(result.rate)
        result.drained_after = observe.wait_drained(url, plan.drain_timeout)
        result.lag = observe.end_to_end_lag(url, since)
        print(f"   lag p50 {result.lag.p50 or 0:.0f} ms p99 {result.lag.p99 or 0:.0f} ms, "
              f"backlog max {result.backlog[0]}, drained after {result.drained_after}", flush=True)

    result.web_rss = [x for x in map(observe.peak_rss_mib, server.web_pids()) if x is not None]
    if server.worker:
        result.worker_rss = observe.peak_rss_mib(server.worker.pid)
    return result


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
    p.add_argument("--threads", type=int, default=4, help="gunicorn --threads, for gthread")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--profile", action="store_true",
                   help="sample one project web worker with py-spy (pip install py-spy) during full speed")
    return p.parse_args(argv)


def _interrupted(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = Plan.from_args(args)
    load.require_wrk()
    signal.signal(signal.SIGTERM, _interrupted)  # so every `with` below stops what it started
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
    shown = {
        "gunicorn": f"the project's gunicorn.conf.py with `{settings}` (both servers)",
        "load": f"wrk -t{plan.wrk_threads} -c{plan.connections}, {plan.warmup:g} s warm-up then {plan.duration:g} s; "
                f"constant rate for {plan.rate_duration:g} s over up to {plan.paced_connections} connections",
        "callbacks": "distinct and signed, never repeated: " + ", ".join(
            f"{w}% {kind} ({via})" for w, kind, via in callbacks.MIX),
        "durability": "SQLite WAL synchronous=FULL; PostgreSQL synchronous_commit=on (project defaults)",
    }
    print("\n".join(f"{k}: {v}" for k, v in {**info, **shown}.items()), flush=True)

    with tempfile.TemporaryDirectory(prefix="receiver-bench-") as tmp:
        workdir = Path(tmp)
        fsync_before = micro.fsync_latency_us(tmp)
        results = []
        with servers.serve_bare(settings, workdir) as server:
            bare = measure(server, "-", plan, workdir, expected_rps=3000)
        results.append(bare)
        for backend in backends:
            for worker_process in variants:
                with contextlib.ExitStack() as stack:
                    url = stack.enter_context(servers.fresh_database(backend, workdir))
                    server = stack.enter_context(
                        servers.serve_project(settings, url, workdir, worker_process=worker_process))
                    results.append(measure(server, backend, plan, workdir, rate=bare.rate, profile=args.profile,
                                           expected_rps=max(500.0, bare.full_speed.rps)))

        costs = {name: f"{us:,.1f} µs" for name, us in micro.signature_costs().items()}
        for backend in backends:
            with servers.fresh_database(backend, workdir) as url:
                costs[f"inbox.record_event, {backend} (one durable commit)"] = f"{micro.storage_cost(url):,.0f} µs"
        fsync_after = micro.fsync_latency_us(tmp)
        costs["write 4 KiB + fsync in the SQLite directory, p50 / p99 (start of run)"] = \
            f"{fsync_before[0]:,.0f} / {fsync_before[1]:,.0f} µs"
        costs["same, end of run"] = f"{fsync_after[0]:,.0f} / {fsync_after[1]:,.0f} µs"

    notes.append("other CPU load: cores busy with something other than the benchmark's own processes during "
                 "the measurement (the machine may be shared); figures taken while it is high are noisy.")
    markdown = report.render(info, shown, results, costs, notes)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(markdown)
    print("\n" + markdown)
    print(f"(written to {RESULTS / 'latest.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
