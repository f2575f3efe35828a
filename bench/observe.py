"""What is read around a run: the project's backlog and end-to-end lag from its database, peak memory,
and how much CPU something other than the benchmark used meanwhile (the machine may be shared).
"""
from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from load import percentile

BACKLOG_STATES = ("pending", "failed", "processing")
_BACKLOG = sqlalchemy.text(
    "SELECT count(*) FROM events WHERE state IN ('pending', 'failed', 'processing')"
)


def _engine(url: str):
    return sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)


class BacklogSampler:
    """Counts the events not yet finished, once a second, in a background thread."""

    def __init__(self, url: str, interval: float = 1.0):
        self.engine = _engine(url)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backlog-sampler", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self.engine.dispose()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.interval):
            self.samples.append((time.monotonic() - start, backlog(self.engine)))

    def verdict(self, rate: float) -> tuple[int, int, float, bool]:
        """(max, last, growth per second over the second half, bounded?).

        Bounded: over the second half of the run the backlog grew by less than 1% of the arrival rate.
        """
        if not self.samples:
            return 0, 0, 0.0, True
        counts = [n for _, n in self.samples]
        half = self.samples[len(self.samples) // 2:]
        slope = _slope(half)
        return max(counts), counts[-1], slope, slope < 0.01 * rate


def _slope(points: list[tuple[float, int]]) -> float:
    if len(points) < 2:
        return 0.0
    mx = sum(t for t, _ in points) / len(points)
    my = sum(n for _, n in points) / len(points)
    var = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (n - my) for t, n in points) / var if var else 0.0


def backlog(engine) -> int:
    try:
        with engine.connect() as conn:
            return conn.execute(_BACKLOG).scalar_one()
    except sqlalchemy.exc.OperationalError:
        return -1  # the database was busy for longer than the timeout: shown as a gap, not a crash


def wait_drained(url: str, timeout: float) -> float | None:
    """Seconds until the backlog reached zero, or None if it did not within `timeout`."""
    engine = _engine(url)
    start = time.monotonic()
    try:
        while time.monotonic() - start < timeout:
            if backlog(engine) == 0:
                return time.monotonic() - start
            time.sleep(0.5)
        return None
    finally:
        engine.dispose()


@dataclass
class Lag:
    """Acknowledged -> handler finished (events.processed_at - events.received_at), in milliseconds."""

    finished: int
    unfinished: int
    p50: float | None
    p99: float | None
    max: float | None


def end_to_end_lag(url: str, since: float) -> Lag:
    """Lag of every event received after `since` (epoch seconds)."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text("SELECT processed_at - received_at FROM events WHERE received_at >= :since "
                                "AND processed_at IS NOT NULL"), {"since": since},
            ).scalars().all()
            unfinished = conn.execute(
                sqlalchemy.text("SELECT count(*) FROM events WHERE received_at >= :since AND processed_at IS NULL"),
                {"since": since},
            ).scalar_one()
    finally:
        engine.dispose()
    lags = sorted(x * 1000 for x in rows)
    return Lag(len(lags), unfinished, percentile(lags, 50), percentile(lags, 99), lags[-1] if lags else None)


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM: the most resident memory this process ever had."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _jiffies(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid] + [p for kid in kids for p in _tree(int(kid))]


def _postgres_pids(database: str) -> list[int]:
    """The backends serving `database`, and PostgreSQL's own background processes (WAL writer...)."""
    engine = _engine(os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    try:
        with engine.connect() as conn:
            return list(conn.execute(sqlalchemy.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :db OR backend_type <> 'client backend'"),
                {"db": database}).scalars())
    finally:
        engine.dispose()


class CpuMeter:
    """CPU used during a block: by the web processes, the worker process, the server's PostgreSQL
    backends, the link proxy, and by the rest of the machine (`other_cores`: all busy time minus those
    and this process with its children, i.e. wrk). Per-process deltas: a process that exits takes its time with it.
    """

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self, web_pid: int, worker_pid: int | None = None, *, postgres_database: str | None = None,
                 link_pid: int | None = None):
        self.web_pid, self.worker_pid, self.database, self.link_pid = web_pid, worker_pid, postgres_database, link_pid
        self.web_seconds = self.worker_seconds = self.postgres_seconds = self.link_seconds = 0.0
        self.other_cores: float | None = None

    def _groups(self) -> dict[str, list[int]]:
        return {
            "web": _tree(self.web_pid),
            "worker": _tree(self.worker_pid) if self.worker_pid else [],
            "postgres": _postgres_pids(self.database) if self.database else [],
            "link": [self.link_pid] if self.link_pid else [],
        }

    def _snapshot(self) -> tuple[float, dict[str, dict[int, int]], float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields) - fields[3] - fields[4]) / self.HZ  # minus idle and iowait
        per_process = {group: {pid: _jiffies(pid) for pid in pids} for group, pids in self._groups().items()}
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been waited for
        own = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        return busy, per_process, own, time.monotonic()

    def __enter__(self):
        self._start = self._snapshot()
        return self

    def __exit__(self, *exc):
        busy, per_process, own, now = self._snapshot()
        start_busy, start_per_process, start_own, start = self._start

        def used(group: str) -> float:
            before = start_per_process[group]
            return sum(max(0, j - before.get(pid, 0)) for pid, j in per_process[group].items() if j) / self.HZ

        self.web_seconds, self.worker_seconds = used("web"), used("worker")
        self.postgres_seconds, self.link_seconds = used("postgres"), used("link")
        elapsed = now - start
        ours = self.web_seconds + self.worker_seconds + self.postgres_seconds + self.link_seconds + own - start_own
        if elapsed > 0:
            self.other_cores = max(0.0, (busy - start_busy - ours) / elapsed)
