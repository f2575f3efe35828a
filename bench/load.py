"""The two ways load is applied: wrk at full speed (closed loop), and a constant-rate sender (open loop).

The constant-rate sender measures each latency from the moment the request was due, not from when it
left, as wrk2 does: a server that stalls cannot hide the requests that queued up behind the stall.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

LUA = Path(__file__).resolve().parent / "replay.lua"
REQUEST_TIMEOUT = 15.0  # Vonage gives up on a callback after about this long


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    return path


class SigningMismatch(SystemExit):
    pass


def check_signing(outcome: "Outcome", name: str) -> None:
    """A 401 means our signatures do not match the server's settings: every figure would be wrong."""
    if outcome.statuses.get(401):
        raise SigningMismatch(
            f"\n{name} answered 401 to {outcome.statuses[401]} requests: the benchmark signs callbacks in a way "
            f"the server refuses (secret, SMS method or time window). First answers: {outcome.first_errors}"
        )


def percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


@dataclass
class Outcome:
    """What one load run saw. Latencies in milliseconds."""

    requests: int
    seconds: float
    statuses: dict[int, int]
    socket_errors: int
    p50: float | None
    p99: float | None
    p999: float | None
    wrapped: int = 0  # times a wrk thread ran out of distinct requests and started over
    first_errors: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)


def run_wrk(port: int, prefix: str, seconds: float, *, threads: int, connections: int) -> Outcome:
    """wrk replaying the request files at `prefix` as fast as the server answers, for whole seconds."""
    seconds = max(1, round(seconds))  # wrk takes no fractions
    args = [require_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
            "--timeout", f"{REQUEST_TIMEOUT:g}s", "-s", str(LUA), f"http://127.0.0.1:{port}", "--", prefix]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in done.stdout.splitlines() if l.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    r = json.loads(line.removeprefix("BENCH_RESULT "))
    lat = r["latency_us"]
    return Outcome(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        statuses={int(code): n for code, n in r["statuses"].items()},
        socket_errors=sum(r["socket_errors"].values()),
        p50=lat["p50"] / 1000, p99=lat["p99"] / 1000, p999=lat["p99.9"] / 1000,
        wrapped=r["wrapped"],
        first_errors=r["first_errors"],
    )


def run_constant_rate(port: int, requests: list[bytes], rate: float, *, connections: int) -> Outcome:
    """Send `requests` at `rate` per second over up to `connections` connections; bounded in time."""
    return asyncio.run(_constant_rate(port, requests, rate, connections))


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> tuple[int, bool, bytes]:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    length = 0
    at = lower.find(b"content-length:")
    if at >= 0:
        length = int(lower[at + 15:lower.index(b"\r\n", at)])
    body = await reader.readexactly(length) if length else b""
    keep_alive = head.startswith(b"HTTP/1.1") and b"connection: close" not in lower
    return int(head[9:12]), keep_alive, body


async def _constant_rate(port: int, requests: list[bytes], rate: float, connections: int) -> Outcome:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors: list[str] = []
    failures = 0

    async def connection() -> None:
        nonlocal failures
        reader = writer = None
        try:
            while (item := await queue.get()) is not None:
                due, raw = item
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        status, keep_alive, body = await _exchange(reader, writer, raw)
                    latencies.append(loop.time() - due)
                    statuses[status] += 1
                    if status != 200 and len(errors) < 3:
                        errors.append(f"{status} {body[:200].decode('utf-8', 'replace')}")
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                    failures += 1
                    keep_alive = False
                if not keep_alive and writer is not None:
                    writer.close()
                    writer = None
        finally:
            if writer is not None:
                writer.close()

    senders = [asyncio.create_task(connection()) for _ in range(connections)]
    start = loop.time() + 0.05
    for i, raw in enumerate(requests):
        due = start + i / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        queue.put_nowait((due, raw))
    for _ in senders:
        queue.put_nowait(None)
    planned = len(requests) / rate
    try:
        # Bounded: whatever has not been answered 30 s after the last request was due counts as lost.
        await asyncio.wait_for(asyncio.gather(*senders), timeout=REQUEST_TIMEOUT + 15)
    except asyncio.TimeoutError:
        pass
    lost = len(requests) - len(latencies) - failures
    elapsed = max(planned, loop.time() - start)
    latencies.sort()
    ms = [None if x is None else x * 1000 for x in (percentile(latencies, p) for p in (50, 99, 99.9))]
    return Outcome(
        requests=len(latencies), seconds=elapsed, statuses=dict(statuses), socket_errors=failures + lost,
        p50=ms[0], p99=ms[1], p999=ms[2], first_errors=errors,
    )
