"""What each tuning mechanism buys: the project as it is against a copy of it with that one mechanism
taken out, in alternating rounds, in one run.

    .venv/bin/python bench/mechanisms.py [--rounds 3] [--seconds 8] [--only NAME ...]

Each variant is the current tree checked out in a temporary git worktree with one small edit (listed
below, so a reader sees exactly what was removed), served with the same gunicorn settings and the same
fresh database kind; acknowledgements at full speed (wrk, 16 connections) with the worker as a thread of
the web processes, the default. Worker-only mechanisms are measured without HTTP: one worker loop
draining 3,000 stored callbacks, in this process, with the module constant changed. Nothing here is
imported by the project; the worktrees are removed at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

import callbacks  # noqa: E402
import linkproxy  # noqa: E402
import load  # noqa: E402
import micro  # noqa: E402
import observe  # noqa: E402
import servers  # noqa: E402

# name -> (database kinds, file, the text as it is, the text without the mechanism)
REMOVALS = {
    "group commit": (("sqlite", "postgres", "postgres-link"), "receiver/storage/repositories.py",
                     "return self._committer.record(callback)", "return events.record_event(self.engine, callback)"),
    "SQLite writer file lock": (("sqlite",), "receiver/storage/engines.py",
                                "if fcntl is not None and self._path:", "if False:"),
    "GIL hand-off beside requests": (("sqlite",), "receiver/worker/loop.py",
                                     "if self.beside_requests:\n            time.sleep(0)",
                                     "if False:\n            time.sleep(0)"),
    "insert statement cache": (("instructions",), "receiver/storage/events.py",
                               "@lru_cache(maxsize=None)\ndef _insert_sql(", "def _insert_sql("),
}
# Worker constants: (module, name, value without the mechanism).
WORKER_CONSTANTS = {
    "outcomes written ten at a time": ("receiver.worker.policy", "settle_every", 1),
    "message state fifty events per transaction": ("receiver.storage.reconcile", "APPLY_CHUNK", 1),
    "claims of up to 100 events": ("receiver.worker.policy", "max_batch", 10),
}


@contextlib.contextmanager
def variant(edit_file: str, before: str, after: str):
    """A worktree of HEAD with one edit applied; yields its root."""
    folder = Path(tempfile.mkdtemp(prefix="bench-variant-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), "HEAD"], check=True,
                   capture_output=True)
    try:
        path = folder / edit_file
        text = path.read_text()
        if before not in text:
            raise SystemExit(f"{edit_file} no longer contains {before!r}: update bench/mechanisms.py")
        path.write_text(text.replace(before, after, 1))
        yield folder
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], capture_output=True)


def full_speed(root: Path, database: str, work: Path, seconds: float, link) -> tuple[float, float, float]:
    """(acks/s, web CPU ms per ack, p99 ms) of the tree at `root`, worker in the web processes."""
    with servers.fresh_database(database, work, link=link) as url:
        with servers.serve_project(servers.Gunicorn(), url, work, root=root, env=callbacks.server_env()) as srv:
            prefix = callbacks.write_slices(callbacks.generate(40000), work, f"m{time.monotonic_ns()}", 2)
            load.run_wrk(srv.port, prefix, 2, threads=2, connections=16)
            pids = observe._tree(srv.master.pid)
            before = sum(observe._jiffies(p) for p in pids)
            out = load.run_wrk(srv.port, prefix, seconds, threads=2, connections=16)
            cpu = (sum(observe._jiffies(p) for p in pids) - before) / os.sysconf("SC_CLK_TCK")
    return out.rps, cpu / max(1, out.requests) * 1000, out.p99


def instructions(root: Path) -> float:
    done = subprocess.run([sys.executable, str(root / "bench" / "instructions.py")], capture_output=True, text=True,
                          cwd=root, timeout=1800)
    line = next(line for line in done.stdout.splitlines() if line.startswith("project:"))
    return float(line.split()[1].replace(",", ""))


def compare_http(name: str, databases, edit, rounds: int, seconds: float, work: Path, link) -> list[str]:
    rows = []
    with variant(*edit) as without:
        for database in databases:
            if database == "instructions":
                with_it, without_it = instructions(ROOT), instructions(without)
                rows.append(f"| {name} | instructions per callback | {with_it:,.0f} | {without_it:,.0f} | "
                            f"{with_it / without_it:.2f} |")
                continue
            found = {"with": [], "without": []}
            for r in range(rounds):
                order = [("with", ROOT), ("without", without)]
                for label, root in (order if r % 2 == 0 else order[::-1]):
                    found[label].append(full_speed(root, database, work, seconds, link))
            acks = {k: statistics.median(v[0] for v in vs) for k, vs in found.items()}
            p99 = {k: statistics.median(v[2] for v in vs) for k, vs in found.items()}
            spread = " / ".join(f"{a:,.0f}" for a, _, _ in found["with"]), " / ".join(
                f"{a:,.0f}" for a, _, _ in found["without"])
            rows.append(f"| {name} | {database}: acks/s (rounds) | {spread[0]} | {spread[1]} | "
                        f"{acks['with'] / acks['without']:.2f} |")
            rows.append(f"| {name} | {database}: ack p99 ms | {p99['with']:.1f} | {p99['without']:.1f} | "
                        f"{p99['with'] / p99['without']:.2f} |")
            print(rows[-2], rows[-1], sep="\n", flush=True)
    return rows


def compare_worker(name: str, module: str, constant: str, value, work: Path) -> list[str]:
    """A module constant changed, or (module receiver.worker.policy) one field of the worker's Policy."""
    import dataclasses
    import importlib

    mod = importlib.import_module(module)
    rates = {"with": [], "without": []}
    in_policy = module == "receiver.worker.policy"
    policy = mod.POLICY if in_policy else None
    original = getattr(policy, constant) if in_policy else getattr(mod, constant)
    for r in range(3):
        for label in (("with", "without") if r % 2 == 0 else ("without", "with")):
            chosen = original if label == "with" else value
            if in_policy:
                mod.POLICY = dataclasses.replace(policy, **{constant: chosen})
            else:
                setattr(mod, constant, chosen)
            try:
                rates[label].append(micro.worker_rate(f"sqlite:///{work}/w{r}{label}.sqlite3"))
            finally:
                if in_policy:
                    mod.POLICY = policy
                else:
                    setattr(mod, constant, original)
    a, b = statistics.median(rates["with"]), statistics.median(rates["without"])
    row = f"| {name} ({constant} {original} vs {value}) | worker events/s, sqlite | {a:,.0f} | {b:,.0f} | {a / b:.2f} |"
    print(row, flush=True)
    return [row]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--only", nargs="*", help="names (or parts of names) of the mechanisms to measure")
    args = parser.parse_args(argv)
    load.require_wrk()
    chosen = lambda name: not args.only or any(part in name for part in args.only)  # noqa: E731
    rows = ["| mechanism | measure | with it | without it | with/without |", "|---|---|---|---|---|"]
    work = Path(tempfile.mkdtemp(prefix="bench-mechanisms-"))
    with contextlib.ExitStack() as stack:
        link = None
        if any("postgres-link" in spec[0] for name, spec in REMOVALS.items() if chosen(name)):
            link = stack.enter_context(linkproxy.running(servers.PG_ADMIN_URL, 0.5, work / "link.log"))
        for name, (databases, *edit) in REMOVALS.items():
            if chosen(name):
                rows += compare_http(name, databases, edit, args.rounds, args.seconds, work, link)
        for name, (module, constant, value) in WORKER_CONSTANTS.items():
            if chosen(name):
                rows += compare_worker(name, module, constant, value, work)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
