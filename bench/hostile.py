"""Worker classes side by side against hostile peers, a forgery flood, and full speed, in one run.

    .venv/bin/python bench/hostile.py [--candidate NAME ...] [--tree REV ...] [--seconds 12]

For each candidate (this tree's worker class, gunicorn's gthread, gevent when installed, and the
project at other revisions), on a fresh SQLite database, with the Procfile's web command:
- an honest client alone: a signed callback every 50 ms on a fresh connection, its p50/p95/p99/max;
- the same beside the hostile mixes of tests/peers.py (seeds and peer counts as in the tests), and
  beside 30 peers that send `Connection: close` and linger: failures, p99, max, and whether gunicorn
  killed a worker for timing out;
- beside a forgery flood: wrk with 4 connections sending wrongly signed callbacks as fast as it can;
  the honest client's p95 against its p95 alone, and the forgeries answered per second;
- full speed: wrk, 16 connections, distinct signed callbacks, acks/s.
Candidates are measured phase by phase, one after another, so drift hits them alike.
"""
from __future__ import annotations

import argparse
import contextlib
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

import callbacks  # noqa: E402
import load  # noqa: E402
import servers  # noqa: E402
import trees  # noqa: E402

from devkit import samples  # noqa: E402
from receiver.operator.signed import sign_request  # noqa: E402

MIXES = ((1, 50), (2, 200), (3, 500))
LINGERING = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Candidate:
    name: str
    worker_class: str | None  # None: what the tree's gunicorn.conf.py says
    root: Path = ROOT


def exchange(port: int, raw: bytes, timeout: float = 10.0) -> int:
    """Send one request on a fresh connection and read its answer; its status (0 when none came)."""
    head_end = raw.index(b"\r\n\r\n")
    raw = raw[:head_end] + b"\r\nConnection: close" + raw[head_end:]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return int(answer[9:12] or 0)
    except (OSError, ValueError):
        return 0


def honest(port: int, seconds: float, interval: float = 0.05) -> dict:
    """Signed callbacks at a steady pace: latency figures (ms) and failures."""
    latencies, failed = [], 0
    requests = callbacks.generate(int(seconds / interval) + 1, seed=time.monotonic_ns())
    end = time.monotonic() + seconds
    for raw in requests:
        if time.monotonic() >= end:
            break
        started = time.perf_counter()
        failed += exchange(port, raw) != 200
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(max(0.0, interval - (time.perf_counter() - started)))
    ordered = sorted(latencies)
    return {"sent": len(ordered), "failed": failed, "p50": load.percentile(ordered, 50),
            "p95": load.percentile(ordered, 95), "p99": load.percentile(ordered, 99), "max": ordered[-1]}


def forged(count: int) -> list[bytes]:
    """Callbacks of the usual mix signed with a secret the server does not have: every one is refused."""
    made = []
    for kind, via, payload in samples.traffic(count, random.Random(count)):
        signed = sign_request(kind, payload, "http://127.0.0.1", "not-the-secret-of-this-server", callbacks.API_KEY,
                              callbacks.SMS_METHOD, via.lower(), callbacks.APPLICATION_ID)
        target = urlsplit(signed.url)
        made.append(callbacks._http(signed.method, target.path + (f"?{target.query}" if target.query else ""),
                                    signed.headers, signed.body))
    return made


@contextlib.contextmanager
def serving(candidate: Candidate, work: Path):
    with servers.fresh_database("sqlite", work) as url:
        settings = servers.Gunicorn(worker_class=candidate.worker_class)
        with servers.serve_project(settings, url, work, root=candidate.root, name=candidate.name,
                                   env=callbacks.server_env()) as server:
            yield server


def timeouts_in(server) -> int:
    return server.log_path.read_text(errors="replace").count("WORKER TIMEOUT")


def beside_peers(server, seed: int, count: int, seconds: float) -> dict:
    peers = subprocess.Popen([sys.executable, "-m", "tests.peers", "--port", str(server.port), "--count", str(count),
                              "--seed", str(seed), "--seconds", str(seconds + 2)], cwd=ROOT,
                             stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        return honest(server.port, seconds)
    finally:
        try:
            peers.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            peers.kill()
            peers.wait()


def beside_lingering(server, seconds: float) -> dict:
    held = []
    try:
        for _ in range(30):
            peer = socket.socket()
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            peer.connect(("127.0.0.1", server.port))
            peer.sendall(LINGERING)
            held.append(peer)
        return honest(server.port, seconds, interval=0.1)
    finally:
        for peer in held:
            peer.close()


def beside_flood(server, seconds: float, work: Path) -> dict:
    prefix = callbacks.write_slices(forged(20000), work, f"forged-{server.port}", 1)
    flood = subprocess.Popen([load.require_wrk(), "-t", "1", "-c", "4", "-d", f"{round(seconds) + 3}s", "-s",
                              str(load.LUA), f"http://127.0.0.1:{server.port}", "--", prefix],
                             stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        figures = honest(server.port, seconds)
    finally:
        out, _ = flood.communicate(timeout=seconds + 60)
    line = next((l for l in out.splitlines() if l.startswith("BENCH_RESULT ")), None)
    if line is not None:
        import json

        result = json.loads(line.removeprefix("BENCH_RESULT "))
        figures["forgeries_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    return figures


def full_speed(server, seconds: float, work: Path) -> float:
    prefix = callbacks.write_slices(callbacks.generate(60000, seed=server.port), work, f"speed-{server.port}", 1)
    load.run_wrk(server.port, prefix, 1, threads=1, connections=16)  # warm-up
    outcome = load.run_wrk(server.port, prefix, seconds, threads=1, connections=16)
    load.check_signing(outcome, server.name)
    return outcome.rps


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", action="append", choices=["tree", "gthread", "gevent"],
                        help="which to measure (default: all that are available)")
    parser.add_argument("--tree", action="append", default=[], help="also measure the project at this revision")
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args(argv)
    wanted = args.candidate or ["tree", "gthread", "gevent"]
    candidates = []
    if "tree" in wanted:
        candidates.append(Candidate("this tree", None))
    if "gthread" in wanted:
        candidates.append(Candidate("gthread", "gthread"))
    if "gevent" in wanted:
        try:
            import gevent  # noqa: F401
            candidates.append(Candidate("gevent", "gevent"))
        except ImportError:
            print("gevent is not installed (pip install gevent): left out")
    rows: dict[str, dict] = {c.name: {} for c in candidates}
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as folder, trees.checked_out(args.tree) as others:
        work = Path(folder)
        candidates += [Candidate(t.name, None, t.root) for t in others]
        rows.update({t.name: {} for t in others})
        for candidate in candidates:
            with serving(candidate, work) as server:
                row = rows[candidate.name]
                row["alone"] = honest(server.port, args.seconds)
                for seed, count in MIXES:
                    row[f"mix {count}"] = beside_peers(server, seed, count, args.seconds)
                row["lingering 30"] = beside_lingering(server, args.seconds)
                row["flood"] = beside_flood(server, args.seconds, work)
                row["acks/s"] = full_speed(server, 5, work)
                row["timeouts"] = timeouts_in(server)
            print(f"{candidate.name}: done", flush=True)
    lines = ["| candidate | alone p95 / max ms | " + " | ".join(f"{c} peers: failed, p99, max ms" for _, c in MIXES)
             + " | 30 lingering: failed, max ms | forgery flood: p95 ms (x alone), forgeries/s | WORKER TIMEOUT "
             "| acks/s |", "|---" * (6 + len(MIXES)) + "|"]
    for name, row in rows.items():
        alone, flood = row["alone"], row["flood"]
        cells = [f"{_ms(alone['p95'])} / {_ms(alone['max'])}"]
        cells += [f"{row[f'mix {c}']['failed']}, {_ms(row[f'mix {c}']['p99'])}, {_ms(row[f'mix {c}']['max'])}"
                  for _, c in MIXES]
        cells.append(f"{row['lingering 30']['failed']}, {_ms(row['lingering 30']['max'])}")
        cells.append(f"{_ms(flood['p95'])} ({flood['p95'] / alone['p95']:.1f}x), {flood.get('forgeries_per_s', 0):.0f}")
        cells += [str(row["timeouts"]), f"{row['acks/s']:.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
