"""Acknowledgement at full speed, in alternating rounds: each round measures every contender once, the
order reversed every other round, since this machine's speed drifts by tens of percent between
minutes. Ratios are taken within a round (same minutes), then their spread over the rounds is shown.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import callbacks
import hotspots
import load
import observe
import refs
from refs import Contender
from report import table

CPU_PARTS = ("web", "worker", "postgres", "link")


@dataclass
class FullSpeed:
    contender: Contender
    round: int
    outcome: load.Outcome
    cpu_ms: dict[str, float]  # CPU per acknowledged callback, by CPU_PARTS
    other_cpu: float | None
    web_rss: list[float] = field(default_factory=list)
    worker_rss: float | None = None
    drain_seconds: float | None = 0.0  # after the load, until everything acknowledged was processed (None: not)

    @property
    def processed_per_s(self) -> float | None:
        """Callbacks acknowledged and processed per second: acks over the load and its drain."""
        if self.drain_seconds is None:
            return None
        acks = sum(n for code, n in self.outcome.statuses.items() if 200 <= code < 300)
        return acks / (self.outcome.seconds + self.drain_seconds) if self.outcome.seconds else 0.0

    @property
    def acks_per_s(self) -> float:
        acks = sum(n for code, n in self.outcome.statuses.items() if 200 <= code < 300)
        return acks / self.outcome.seconds if self.outcome.seconds else 0.0


def order(items: list, round_index: int) -> list:
    return items if round_index % 2 == 0 else items[::-1]


def replay_file(workdir: Path, tag: str, count: int, threads: int) -> str:
    return callbacks.write_slices(callbacks.generate(max(count, 50)), workdir, tag, threads)


def remove_replay_files(prefix: str) -> None:
    for path in Path(prefix).parent.glob(Path(prefix).name + "-*.req"):
        path.unlink(missing_ok=True)


def measure(server, contender: Contender, plan, workdir: Path, *, expected_rps: float, link=None,
            round_index: int = 0, profile_to: Path | None = None) -> FullSpeed:
    """Warm up with requests of its own, let the project's backlog drain, then wrk at full speed;
    with `profile_to` (a folder), sample the web and worker processes with py-spy meanwhile."""
    tag = f"r{round_index + 1}-{contender.label}".replace(" ", "-").replace("(", "").replace(")", "")
    print(f"   {contender.label} on port {server.port}", flush=True)
    warm = replay_file(workdir, f"{tag}-warm", int(plan.warmup * expected_rps), plan.wrk_threads)
    full = replay_file(workdir, f"{tag}-full", int(plan.duration * expected_rps * 1.5), plan.wrk_threads)
    try:
        load.check_signing(load.run_wrk(server.port, warm, plan.warmup, threads=plan.wrk_threads,
                                        connections=plan.connections), contender.label)
        if server.database_url:
            observe.wait_drained(server.database_url, plan.drain_timeout)
        link_pid = link.pid if link and contender.database == "postgres-link" else None
        spies = {}
        if profile_to and hotspots.available():
            targets = {"web": server.web_pids()[0], "worker": server.worker.pid if server.worker else None}
            spies = {part: hotspots.start(pid, plan.duration, workdir / f"{tag}-{part}.spy")
                     for part, pid in targets.items() if pid}
        with observe.CpuMeter(server.master.pid, server.worker.pid if server.worker else None,
                              postgres_database=server.postgres_database, link_pid=link_pid) as cpu:
            outcome = load.run_wrk(server.port, full, plan.duration, threads=plan.wrk_threads,
                                   connections=plan.connections)
            # The project acknowledges first and processes after: its CPU per callback counts both, so
            # the meter runs until what was acknowledged is processed too.
            drained = observe.wait_drained(server.database_url, plan.drain_timeout) if server.database_url else 0.0
    finally:
        remove_replay_files(warm)
        remove_replay_files(full)
    load.check_signing(outcome, contender.label)
    for part, spy in spies.items():
        spy.wait(plan.duration + 30)
        profile_to.mkdir(exist_ok=True)
        (profile_to / f"profile-{tag}-{part}.txt").write_text(hotspots.summarise(workdir / f"{tag}-{part}.spy"))
    result = FullSpeed(contender, round_index, outcome, {}, cpu.other_cores, drain_seconds=drained)
    seconds = (cpu.web_seconds, cpu.worker_seconds, cpu.postgres_seconds, cpu.link_seconds)
    acks = max(1.0, result.acks_per_s * outcome.seconds)
    result.cpu_ms = {part: 1000 * s / acks for part, s in zip(CPU_PARTS, seconds)}
    result.web_rss = [x for x in map(observe.peak_rss_mib, server.web_pids()) if x is not None]
    result.worker_rss = observe.peak_rss_mib(server.worker.pid) if server.worker else None
    print(f"     {result.acks_per_s:,.0f} acks/s, p99 {outcome.p99:.1f} ms, statuses {outcome.statuses}", flush=True)
    return result


def run(contenders: list[Contender], plan, workdir: Path, link=None, profile_to: Path | None = None) -> list[FullSpeed]:
    """plan.rounds rounds over every contender, each on a fresh database; with `profile_to`, this
    tree's project is sampled with py-spy in the first round."""
    results: list[FullSpeed] = []
    expected: dict[str, float] = {}  # what each reached last round, to size its distinct callbacks
    for r in range(plan.rounds):
        print(f"\n== full speed, round {r + 1} of {plan.rounds}", flush=True)
        for contender in order(contenders, r):
            guess = expected.get(contender.label, max(expected.values(), default=3000.0))
            with refs.serve(contender, workdir, link) as server:
                profile = profile_to if r == 0 and contender.is_project and contender.root == refs.ROOT else None
                result = measure(server, contender, plan, workdir, expected_rps=guess, link=link, round_index=r,
                                 profile_to=profile)
            expected[contender.label] = max(200.0, result.acks_per_s)
            results.append(result)
    return results


def by_contender(results: list[FullSpeed]) -> dict[Contender, list[FullSpeed]]:
    """Each contender's results, in round order, contenders in their first round's order."""
    grouped: dict[Contender, list[FullSpeed]] = {}
    for r in sorted(results, key=lambda x: x.round):
        grouped.setdefault(r.contender, []).append(r)
    return grouped


def median_acks(runs: list[FullSpeed]) -> float:
    return statistics.median(r.acks_per_s for r in runs)


def _spread(values: list[float], fmt: str) -> str:
    """The median, and the min-max over the rounds when there are several."""
    med = format(statistics.median(values), fmt)
    return med if len(values) < 2 else f"{med} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def _ratios(project: list[FullSpeed], reference: list[FullSpeed] | None) -> str:
    if not reference:
        return "-"
    theirs = {r.round: r.acks_per_s for r in reference}
    values = [r.acks_per_s / theirs[r.round] for r in project if theirs.get(r.round)]
    if not values:
        return "-"
    rounds = " / ".join(f"{v:.2f}" for v in values)
    return rounds if len(values) < 2 else f"{rounds} ({min(values):.2f}–{max(values):.2f})"


def render(results: list[FullSpeed], rounds: int) -> list[str]:
    grouped = by_contender(results)
    lines = [f"## Acknowledgement at full speed (wrk, closed loop; {rounds} round(s), "
             "order reversed every other round)", ""]
    rows = []
    for contender, runs in grouped.items():
        o = [r.outcome for r in runs]
        parts = [p for p in CPU_PARTS if any(r.cpu_ms.get(p) for r in runs)]
        cpu = " + ".join(f"{statistics.median(r.cpu_ms[p] for r in runs):.2f} {p}" for p in parts)
        wraps = sum(x.wrapped for x in o)
        processed = [r.processed_per_s for r in runs]
        rows.append([contender.name, contender.database,
                     " / ".join(f"{r.acks_per_s:,.0f}" for r in runs) + (f" ({wraps} wrap)" if wraps else ""),
                     _spread([r.acks_per_s for r in runs], ",.0f"),
                     "not drained" if None in processed else _spread(processed, ",.0f"),
                     _spread([x.p50 for x in o], ".1f"),
                     _spread([x.p99 for x in o], ".1f"), str(sum(x.non_2xx for x in o)),
                     str(sum(x.socket_errors for x in o)), cpu or "-",
                     _spread([r.other_cpu or 0.0 for r in runs], ".2f")])
    lines += table(["server", "database", "acks/s, each round", "acks/s median (min–max)",
                     "processed/s (acks over load + drain)", "p50 ms", "p99 ms", "non-2xx", "socket errors",
                     "CPU ms per callback, acknowledged and processed (median)", "other CPU load (cores)"], rows)

    def find(name: str, database: str):
        return next((runs for c, runs in grouped.items() if c.name == name and c.database == database), None)

    trees = sorted({c.name for c in grouped if c.is_project and c.name.startswith("tree ")
                    and not c.name.endswith("+worker")})
    lines += ["", "## Ratios of acks/s, taken within each round (each round's ratio, then the min–max)", ""]
    rows = []
    for contender, runs in grouped.items():
        if not contender.is_project:
            continue
        db = contender.database
        suffix = "+worker" if contender.worker_process else ""
        row = [contender.name, db, _ratios(runs, find("bare", "-")), _ratios(runs, find("complete-threaded", db)),
               _ratios(runs, find("complete-sync", db)), _ratios(runs, find("naive-sync", db)),
               _ratios(runs, find("naive-threaded", db))]
        if contender.name.startswith("project"):
            row += [_ratios(runs, find(tree + suffix, db)) for tree in trees]
        else:
            row += ["-"] * len(trees)
        rows.append(row)
    lines += table(["server", "database", "vs bare", "vs complete, same settings", "vs complete-sync",
                     "vs naive-sync", "vs naive-threaded",
                     *[f"vs {t} (same worker variant)" for t in trees]], rows)

    lines += ["", "## Peak memory (VmHWM, last round)", ""]
    lines += table(["server", "database", "each web worker MiB", "`flask worker` process MiB"],
                    [[c.name, c.database, ", ".join(f"{x:.0f}" for x in runs[-1].web_rss) or "-",
                      "-" if runs[-1].worker_rss is None else f"{runs[-1].worker_rss:.0f}"]
                     for c, runs in grouped.items()])
    return lines
