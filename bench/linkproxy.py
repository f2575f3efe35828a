"""A loopback TCP proxy in front of PostgreSQL that holds every chunk for a fixed time each way,
as a database across a network link would. Also measures the round trip through it.

    python bench/linkproxy.py --port 6543 [--target 127.0.0.1:5432] [--link-delay-ms 0.5]

Threads, not asyncio: asyncio's timers fire in whole milliseconds (epoll's timeout), which would
turn 0.5 ms into 1 ms; time.sleep overshoots by tens of microseconds. The figure that counts is
the measured round trip (round_trip_ms), printed beside the direct one.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import queue
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

BENCH = Path(__file__).resolve().parent
PR_SET_TIMERSLACK = 29


def _tight_timers() -> None:
    """Let this thread's sleeps end within ~30 µs instead of Linux's default ~80 (timer slack)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)


def _pipe(source: socket.socket, destination: socket.socket, delay: float) -> None:
    """Forward source -> destination, each chunk delay seconds after it arrived, in order."""
    held: queue.SimpleQueue = queue.SimpleQueue()

    def deliver() -> None:
        _tight_timers()
        while (item := held.get()) is not None:
            due, data = item
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            try:
                destination.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            destination.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=deliver, daemon=True)
    sender.start()
    try:
        while data := source.recv(65536):
            held.put((time.perf_counter() + delay, data))
    except OSError:
        pass
    held.put(None)
    sender.join()


def _connection(client: socket.socket, target: tuple[str, int], delay: float) -> None:
    with client, socket.create_connection(target) as server:
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pipe, args=(server, client, delay), daemon=True)
        back.start()
        _pipe(client, server, delay)
        back.join()


def serve_forever(port: int, target: tuple[str, int], delay_ms: float) -> None:
    with socket.create_server(("127.0.0.1", port)) as listener:
        print(f"listening on {listener.getsockname()[1]}", flush=True)
        while True:
            client, _ = listener.accept()
            threading.Thread(target=_connection, args=(client, target, delay_ms / 1000), daemon=True).start()


@dataclass(frozen=True)
class Link:
    """A running proxy: its process id (for its CPU) and the port it listens on."""

    pid: int
    port: int
    delay_ms: float

    def url_for(self, database_url: str) -> str:
        """`database_url`, reached through this proxy."""
        url = sqlalchemy.engine.make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def running(database_url: str, delay_ms: float, log_path: Path):
    """A proxy process in front of the server of `database_url`; yields a Link. Stopped on the way out."""
    import servers

    url = sqlalchemy.engine.make_url(database_url)
    port = servers.free_port()
    args = [sys.executable, str(BENCH / "linkproxy.py"), "--port", str(port),
            "--target", f"{url.host}:{url.port or 5432}", "--link-delay-ms", f"{delay_ms:g}"]
    process = servers.start_process(args, dict(os.environ), log_path, BENCH)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the link proxy did not start; see {log_path}")
            time.sleep(0.05)
        yield Link(process.pid, port, delay_ms)
    finally:
        servers.stop_process(process, grace=5)


def round_trip_ms(database_url: str, count: int = 200) -> tuple[float, float]:
    """(median, p90) milliseconds of `SELECT 1` over one open connection."""
    engine = sqlalchemy.create_engine(database_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            for _ in range(20):  # warm up the connection and the proxy's threads
                raw.execute("SELECT 1").fetchone()
            times = []
            for _ in range(count):
                start = time.perf_counter()
                raw.execute("SELECT 1").fetchone()
                times.append((time.perf_counter() - start) * 1000)
    finally:
        engine.dispose()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


def render_round_trips(link: Link, database_url: str, count: int) -> list[str]:
    """The measured round trip, direct and through the link, as a Markdown section."""
    from report import table

    rows = []
    for path, url in (("direct (loopback)", database_url), (f"through the link proxy ({link.delay_ms:g} ms each way)",
                                                             link.url_for(database_url))):
        median, p90 = round_trip_ms(url, count)
        rows.append([path, f"{median:.3f}", f"{p90:.3f}"])
        print(f"   SELECT 1 round trip, {path}: median {median:.3f} ms, p90 {p90:.3f} ms", flush=True)
    return [f"## The database link: `SELECT 1` round trips over one connection ({count} of them, before any load)", "",
            *table(["path", "median ms", "p90 ms"], rows)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="port to listen on, on 127.0.0.1")
    p.add_argument("--target", default="127.0.0.1:5432", help="host:port to forward to")
    p.add_argument("--link-delay-ms", type=float, default=0.5, help="delay added each way, in milliseconds")
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    serve_forever(args.port, (host, int(port)), args.link_delay_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
