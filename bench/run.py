"""Benchmark the receiver beside its references, on this machine, in one run, and print ratios.

    .venv/bin/python bench/run.py [--smoke | --quick] [--history N] [--tree REV ...] [--chart PATH]

The references: the bare Flask snippet (stores nothing), the careful naive receiver (bench/naive.py)
run as users start it and under the project's gunicorn settings, and other trees of the project.
Each runs on SQLite, on the local PostgreSQL and on PostgreSQL behind a link that adds a delay.
Prints (and saves to bench/results/latest.md) one Markdown report and draws bench/results/chart.png.
Every process it starts, and every worktree it makes, is gone before it exits.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import callbacks  # noqa: E402  (bench/ and the project root must be on the path first)
import chart  # noqa: E402
import history  # noqa: E402
import instructions  # noqa: E402
import linkproxy  # noqa: E402
import load  # noqa: E402
import micro  # noqa: E402
import paced  # noqa: E402
import refs  # noqa: E402
import report  # noqa: E402
import rounds  # noqa: E402
import servers  # noqa: E402
import trees  # noqa: E402

RESULTS = BENCH / "results"
BACKENDS = {"sqlite": ["sqlite"], "postgres": ["postgres"], "link": ["postgres-link"],
            "postgres-link": ["postgres-link"], "both": ["sqlite", "postgres"], "all": list(refs.DATABASES)}


@dataclass(frozen=True)
class Plan:
    warmup: float  # seconds of wrk before each measurement, with requests of its own
    duration: float  # seconds of wrk at full speed
    rate_duration: float  # seconds at a constant rate (0: none)
    drain_timeout: float  # how long the project may take to finish its backlog
    wrk_threads: int
    connections: int
    paced_connections: int
    rounds: int
    settle: float  # seconds of unmeasured load before the first measurement
    api_requests: int  # per API query in the history phase
    claim_batches: int  # claims timed in the history phase
    micro_scale: float  # share of the usual counts for the costs without HTTP

    @classmethod
    def from_args(cls, args) -> "Plan":
        common = dict(wrk_threads=args.wrk_threads, connections=args.connections, paced_connections=64)
        if args.smoke:
            plan = cls(1, 2, 2, 10, rounds=1, settle=1, api_requests=5, claim_batches=5, micro_scale=0.1, **common)
        elif args.quick:
            plan = cls(2, 5, 15, 30, rounds=3, settle=20, api_requests=20, claim_batches=20, micro_scale=1, **common)
        else:
            plan = cls(3, 15, 60, 90, rounds=3, settle=20, api_requests=50, claim_batches=50, micro_scale=1, **common)
        changes = {"rounds": args.rounds} if args.rounds else {}
        if args.full_speed_only:
            changes["rate_duration"] = 0
        return cls(**{**plan.__dict__, **changes})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="5 s at full speed, 15 s at constant rate")
    speed.add_argument("--smoke", action="store_true",
                       help="check that every phase runs: 2 s measurements, 1 round, a tiny history, no valgrind")
    p.add_argument("--rounds", type=int, help="full-speed rounds over every server (default 3; 1 with --smoke)")
    p.add_argument("--backend", default="all", choices=sorted(BACKENDS),
                   help="all (default): sqlite, postgres and postgres behind the link; PostgreSQL is skipped "
                        "with a note when it does not answer")
    p.add_argument("--link-delay-ms", type=float, default=0.5, help="delay the link adds each way (default 0.5)")
    p.add_argument("--worker", choices=("web", "apart", "both"), default="both",
                   help="the project's worker as the web command runs it (the default setting: a process gunicorn "
                        "forks beside the web processes), as `flask worker` with WORKER_IN_WEB=false, or both")
    p.add_argument("--workers", type=int, help="gunicorn --workers for bare, naive-threaded and the project "
                                               "(default: the project's gunicorn.conf.py)")
    p.add_argument("--worker-class", help="gunicorn --worker-class, the same three (default: gunicorn.conf.py)")
    p.add_argument("--threads", type=int, help="gunicorn --threads, the same three (default: gunicorn.conf.py)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--history", type=int, metavar="N",
                   help="also compare the project on an empty database with one holding N stored events "
                        "(1000000 for the real run; 2000 with --smoke)")
    p.add_argument("--tree", action="append", default=[], metavar="REV",
                   help="also measure this revision of the project, checked out in a temporary git worktree "
                        "(repeatable)")
    p.add_argument("--chart", type=Path, metavar="PATH", help="also write the chart here (e.g. docs/benchmark.png)")
    p.add_argument("--full-speed-only", action="store_true", help="skip the constant-rate runs (to compare settings)")
    p.add_argument("--no-handlers", action="store_true",
                   help="skip the runs with a handler that sleeps 5 s and one that always raises")
    p.add_argument("--no-instructions", action="store_true",
                   help="skip counting instructions per callback with valgrind (about 2 minutes)")
    p.add_argument("--profile", action="store_true",
                   help="sample one project web worker with py-spy (pip install py-spy) during full speed")
    args = p.parse_args(argv)
    if args.smoke and args.history is None:
        args.history = 2000
    return args


def describe(plan: Plan, overrides: servers.Gunicorn, link) -> dict[str, str]:
    shown = {f"server: {name}": command for name, command in refs.commands(overrides).items()}
    shown.update({
        "load": f"wrk -t{plan.wrk_threads} -c{plan.connections}, {plan.warmup:g} s warm-up then {plan.duration:g} s, "
                f"{plan.rounds} round(s); constant rate for {plan.rate_duration:g} s over up to "
                f"{plan.paced_connections} connections",
        "callbacks": "distinct and signed, never repeated: " + ", ".join(
            f"{w}% {kind} ({via})" for w, kind, via in callbacks.MIX),
        "durability": "SQLite WAL synchronous=FULL; PostgreSQL synchronous_commit=on (all servers that store)",
    })
    if link:
        shown["link"] = f"a loopback proxy (bench/linkproxy.py) adding {link.delay_ms:g} ms each way"
    return shown


def settle(plan: Plan, overrides: servers.Gunicorn, workdir: Path) -> None:
    """The first half minute of load runs markedly slower on this machine (a bare run at the start
    measured less than half of one a minute later): load it first, unmeasured."""
    if not plan.settle:
        return
    print(f"\n== settling the machine: {plan.settle:g} s of load, not measured", flush=True)
    with servers.serve_bare(overrides, workdir) as server:
        requests = rounds.replay_file(workdir, "settle", int(plan.settle * 10000), plan.wrk_threads)
        load.run_wrk(server.port, requests, plan.settle, threads=plan.wrk_threads, connections=plan.connections)
        rounds.remove_replay_files(requests)


def measure_costs(databases: list[str], workdir: Path, fsync_before: tuple[float, float],
                  scale: float) -> dict[str, str]:
    costs = {name: f"{us:,.1f} µs" for name, us in micro.signature_costs().items()}
    for database in databases:
        with servers.fresh_database(database, workdir) as url:
            costs[f"record_event, {database} (one durable commit)"] = \
                f"{micro.storage_cost(url, int(500 * scale)):,.0f} µs"
        with servers.fresh_database(database, workdir) as url:
            costs[f"one worker loop draining {int(3000 * scale):,} stored callbacks, {database}"] = \
                f"{micro.worker_rate(url, int(3000 * scale)):,.0f} events/s"
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
    overrides = servers.Gunicorn(args.workers, args.worker_class, args.threads)
    notes = []
    databases = list(BACKENDS[args.backend])
    if any(d.startswith("postgres") for d in databases) and (problem := servers.postgres_problem()):
        if not {"sqlite"} & set(databases):
            raise SystemExit(f"PostgreSQL does not answer at {servers.PG_ADMIN_URL}: {problem}")
        databases = ["sqlite"]
        notes.append(f"PostgreSQL skipped: {problem}")
    variants = {"web": [False], "apart": [True], "both": [False, True]}[args.worker]
    local = [d for d in databases if d != "postgres-link"]  # where handlers, history and costs are measured

    with tempfile.TemporaryDirectory(prefix="receiver-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        checked_out = stack.enter_context(trees.checked_out(args.tree))
        link = None
        if "postgres-link" in databases:
            link = stack.enter_context(linkproxy.running(servers.PG_ADMIN_URL, args.link_delay_ms,
                                                         workdir / "linkproxy.log"))
        info = report.machine(servers.PG_ADMIN_URL if databases != ["sqlite"] else None)
        info.update({t.name: f"{t.commit[:12]}, in a temporary git worktree" for t in checked_out})
        shown = describe(plan, overrides, link)
        print("\n".join(f"{k}: {v}" for k, v in {**info, **shown}.items()), flush=True)
        sections = []
        if link:
            print("\n== the database link", flush=True)
            sections.append(linkproxy.render_round_trips(link, servers.PG_ADMIN_URL, 50 if args.smoke else 500))
        fsync_before = micro.fsync_latency_us(tmp)
        settle(plan, overrides, workdir)
        contenders = refs.contenders(databases, variants, checked_out, overrides)
        full = rounds.run(contenders, plan, workdir, link, profile_to=RESULTS if args.profile else None)
        sections.insert(0, rounds.render(full, plan.rounds))
        paced_runs = paced.measure_paced(full, plan, workdir, link) if plan.rate_duration else []
        handler_runs = []
        grouped = rounds.by_contender(full)
        ours = {c.database: rounds.median_acks(runs) for c, runs in reversed(grouped.items())
                if c.is_project and c.root == refs.ROOT}  # the worker-thread variant, when measured
        if plan.rate_duration and not args.no_handlers:
            for database in local:
                handler_runs += paced.measure_handlers(plan, overrides, database, ours[database] / 2, workdir)
        if args.history:
            rows = []
            for database in local:
                rows += history.measure(database, args.history, plan, overrides, workdir,
                                        expected_rps=ours[database])
            sections.append(history.render(rows, args.history))
        costs = measure_costs(local, workdir, fsync_before, plan.micro_scale)
        counted = None
        if args.no_instructions or args.smoke:
            notes.append("instructions per callback not counted (--no-instructions or --smoke)")
        elif instructions.available():
            print("\n== instructions per callback, under callgrind", flush=True)
            counted = instructions.per_callback()
        else:
            notes.append("instructions per callback not counted: valgrind is not installed")

    notes.append("other CPU load: cores busy with something other than the benchmark's own processes during "
                 "the measurement (the machine may be shared); figures taken while it is high are noisy.")
    markdown = report.render(info, shown, sections, paced_runs, costs, notes, handler_runs, counted)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(markdown)
    print("\n" + markdown)
    title = f"{info['project tree']}, {info['CPUs (nproc)']} CPUs, {plan.rounds} round(s) of {plan.duration:g} s"
    for path in [RESULTS / "chart.png"] + ([args.chart] if args.chart else []):
        chart.write(path, full, paced_runs, title)
    print(f"(written to {RESULTS / 'latest.md'}, chart in {RESULTS / 'chart.png'}"
          + (f" and {args.chart}" if args.chart else "") + ")")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("\ninterrupted: the servers, databases and worktrees it made are gone")
