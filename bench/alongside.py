"""What the console and the outbox cost the acknowledgements, in one run, as ratios.

    .venv/bin/python bench/alongside.py [--backend sqlite|postgres|both] [--seconds 20] [--rounds 3]
                                        [--history 1000000]

For each database, the project (gunicorn with its gunicorn.conf.py, the worker as a thread of the web
processes) first runs 5 s at full speed; then callbacks arrive at half that rate (open loop, latency
counted from when each request was due) in four situations, in alternating order over the rounds:

- alone;
- three console tabs open on the live feed, each polling `/ui/feed/rows` every 2 s as the page's script does;
- an operator clicking through the console four pages a second (feed, a filtered feed, problems,
  health, an event, a message), on one connection;
- sending 20 messages a second through `POST /api/outbox` to the local simulator (devkit.simulator), which
  answers 202 and sends its status callbacks (submitted, delivered, read, with its usual shares of
  rejections, duplicates and out-of-order arrivals) back to the receiver on top of the load.

The report gives ack p50 and each round's p99 in each, the ratio of the median p99 to alone's, whether
that median is within the p99s "alone" itself gave over the rounds (the noise between identical runs),
the console pages' p50/p95 and, for sending, how long messages took from queued to sent. Then two
ceilings: the outbox's send rate with SEND_RATE out of the way (2,000 messages queued before the app
starts; the simulator runs on the same cores), and every console page's p50/p95 on a database seeded
with `--history` events.
Nothing here is imported by the project.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import callbacks  # noqa: E402
import history  # noqa: E402
import load  # noqa: E402
import observe  # noqa: E402
import requests  # noqa: E402
import servers  # noqa: E402
import sqlalchemy  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from devkit.simulator import running_simulator  # noqa: E402

APPLICATION_ID = str(uuid.UUID(int=0x5EED))
SENDS_PER_SECOND = 20
PAGES_PER_SECOND = 4  # an operator clicking faster than anyone reads
TABS = 3
POLL_SECONDS = 2.0  # receiver/operator/console/static/console.js: POLL_MS
CEILING_MESSAGES = 2000
NEWEST_ROW = re.compile(r'<tr data-id="(\d+)"')
SPAWN = multiprocessing.get_context("spawn")
SITUATIONS = ("alone", "3 console tabs", "operator clicking", f"sending {SENDS_PER_SECOND}/s")


def _p(values: list[float], p: float) -> float:
    return load.percentile(sorted(values), p) or 0.0


def _keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def operator(port: int) -> requests.Session:
    """A logged-in console session, as the login form makes one."""
    session = requests.Session()
    form = session.get(f"http://127.0.0.1:{port}/ui/login", timeout=30).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    answer = session.post(f"http://127.0.0.1:{port}/ui/login", data={"token": history.ADMIN_TOKEN, "csrf_token": csrf},
                          timeout=30)
    if answer.status_code != 200 or "login" in answer.url:
        raise RuntimeError(f"console login failed: {answer.status_code} {answer.url}")
    return session


def timed_get(session: requests.Session, url: str) -> float:
    began = time.perf_counter()
    answer = session.get(url, timeout=60)
    if answer.status_code != 200:
        raise RuntimeError(f"GET {url} answered {answer.status_code}")
    return (time.perf_counter() - began) * 1000


def pages(port: int, session: requests.Session, database_url: str) -> dict[str, str]:
    """Console pages to load, with a real event id and message id from the database."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            event_id = conn.execute(sqlalchemy.text("SELECT max(id) FROM events")).scalar() or 1
            message_id = conn.execute(sqlalchemy.text(
                "SELECT message_id FROM messages ORDER BY updated_at DESC LIMIT 1")).scalar()
    finally:
        engine.dispose()
    base = f"http://127.0.0.1:{port}/ui"
    found = {"feed": f"{base}/", "feed, dead only": f"{base}/?state=dead", "problems": f"{base}/problems",
             "health": f"{base}/health", "event": f"{base}/events/{event_id}"}
    if message_id:
        found["message"] = f"{base}/messages/{message_id}"
    return found


class Alongside(threading.Thread):
    """Something running beside the load until stopped; collects milliseconds per request."""

    def __init__(self, step):
        super().__init__(daemon=True)
        self.step, self.times, self.stopping, self.error = step, [], threading.Event(), None

    def run(self):
        try:
            while not self.stopping.is_set():
                self.step(self)
        except Exception as exc:  # reported with the result, not swallowed
            self.error = exc

    def stop(self):
        self.stopping.set()
        self.join(timeout=90)
        if self.error:
            raise RuntimeError(f"beside the load: {self.error}") from self.error


def tabs(port: int) -> list[Alongside]:
    def tab(worker: Alongside):
        if not hasattr(worker, "session"):
            worker.session, worker.newest = operator(port), 0
            worker.times.append(timed_get(worker.session, f"http://127.0.0.1:{port}/ui/"))
        began = time.perf_counter()
        answer = worker.session.get(f"http://127.0.0.1:{port}/ui/feed/rows?after={worker.newest}", timeout=60)
        if answer.status_code != 200:
            raise RuntimeError(f"the feed's poll answered {answer.status_code}")
        worker.times.append((time.perf_counter() - began) * 1000)
        if found := NEWEST_ROW.search(answer.text):  # as the script keeps data-newest
            worker.newest = int(found.group(1))
        worker.stopping.wait(max(0.0, POLL_SECONDS - (time.perf_counter() - began)))
    return [Alongside(tab) for _ in range(TABS)]


def browsing(port: int, database_url: str) -> list[Alongside]:
    def click(worker: Alongside):
        if not hasattr(worker, "session"):
            worker.session = operator(port)
            worker.urls = list(pages(port, worker.session, database_url).values())
        for url in worker.urls:
            began = time.perf_counter()
            worker.times.append(timed_get(worker.session, url))
            worker.stopping.wait(max(0.0, 1 / PAGES_PER_SECOND - (time.perf_counter() - began)))
    return [Alongside(click)]


def sending(port: int) -> list[Alongside]:
    def send(worker: Alongside):
        began = time.monotonic()
        answer = requests.post(f"http://127.0.0.1:{port}/api/outbox", timeout=30, json={
            "to": "447700900123", "from": "447700900456", "channel": "sms", "message_type": "text",
            "text": f"bench {uuid.uuid4().hex[:8]}"}, headers={"Authorization": f"Bearer {history.ADMIN_TOKEN}"})
        if answer.status_code != 202:
            raise RuntimeError(f"POST /api/outbox answered {answer.status_code}: {answer.text[:300]}")
        worker.times.append((time.monotonic() - began) * 1000)
        worker.stopping.wait(max(0.0, 1 / SENDS_PER_SECOND - (time.monotonic() - began)))
    return [Alongside(send)]


def send_latencies(database_url: str, since: float) -> tuple[int, float, float]:
    """(sent, p50 s, p95 s) from queued to sent, for messages queued after `since`."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text(
                "SELECT sent_at - created_at FROM outbox WHERE created_at >= :since AND state = 'sent'"),
                {"since": since}).scalars().all()
    finally:
        engine.dispose()
    return len(rows), _p(rows, 50), _p(rows, 95)


def _simulator(port: int, receiver_url: str, public_key: str, ready, stopping) -> None:
    with running_simulator(application_id=APPLICATION_ID, public_key=public_key, signature_secret=callbacks.SECRET,
                           receiver_url=receiver_url, port=port, seed=1):
        ready.set()
        stopping.wait()


@contextlib.contextmanager
def project_with_simulator(database_url: str, workdir: Path, send_rate: float):
    """The project, sending to the simulator; the simulator runs in a process of its own, so the load
    generator in this one shares its interpreter with nothing."""
    private, public = _keys()
    simulator_port = servers.free_port()
    env = {"ADMIN_TOKEN": history.ADMIN_TOKEN, "VONAGE_APPLICATION_ID": APPLICATION_ID,
           "VONAGE_PRIVATE_KEY": private, "VONAGE_API_BASE": f"http://127.0.0.1:{simulator_port}",
           "SEND_RATE": str(send_rate)}
    with servers.serve_project(servers.Gunicorn(), database_url, workdir, env=env) as server:
        ready, stopping = SPAWN.Event(), SPAWN.Event()
        vonage = SPAWN.Process(target=_simulator, daemon=True,
                               args=(simulator_port, f"http://127.0.0.1:{server.port}", public, ready, stopping))
        vonage.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("the simulator did not start")
            yield server
        finally:
            stopping.set()
            vonage.join(30)
            if vonage.is_alive():
                vonage.kill()


def _beside(name: str, port: int, database_url: str, stopping, results) -> None:
    """In a process of its own: run `name`'s activity until `stopping`, then report its timings."""
    make = {"3 console tabs": lambda: tabs(port), "operator clicking": lambda: browsing(port, database_url),
            SITUATIONS[3]: lambda: sending(port)}[name]
    workers = make()
    for worker in workers:
        worker.start()
    stopping.wait()
    try:
        for worker in workers:
            worker.stop()
        results.put(([t for worker in workers for t in worker.times], None))
    except Exception as exc:
        results.put(([], str(exc)))


def situation(name: str, server, database_url: str, rate: float, seconds: float) -> dict:
    observe.wait_drained(database_url, 120)
    requests_ = callbacks.generate(int(rate * seconds))
    stopping, results = SPAWN.Event(), SPAWN.Queue()
    beside = None
    if name != "alone":
        beside = SPAWN.Process(target=_beside, args=(name, server.port, database_url, stopping, results), daemon=True)
        beside.start()
        time.sleep(1)  # its imports and logins before the measured window
    since = time.time()
    try:
        outcome = load.run_constant_rate(server.port, requests_, rate, connections=32)
    finally:
        stopping.set()
    times = []
    if beside is not None:
        times, error = results.get(timeout=120)
        beside.join(30)
        if error:
            raise RuntimeError(f"beside the load ({name}): {error}")
    load.check_signing(outcome, f"project ({name})")
    result = {"p50": outcome.p50, "p99": outcome.p99, "answered": outcome.rps, "non-200": outcome.non_2xx,
              "unanswered": outcome.socket_errors, "beside": times}
    if name.startswith("sending"):
        time.sleep(5)  # let the last sends go out
        result["sends"] = send_latencies(database_url, since)
    print(f"   {name}: ack p50 {outcome.p50:.1f} ms p99 {outcome.p99:.1f} ms, {outcome.rps:,.0f}/s answered, "
          f"{len(result['beside'])} requests beside", flush=True)
    return result


def measure(database: str, rounds: int, seconds: float, workdir: Path, link=None) -> list[str]:
    rows = []
    with servers.fresh_database(database, workdir, link=link) as url:
        with project_with_simulator(url, workdir, SENDS_PER_SECOND * 1.5) as server:
            prefix = callbacks.write_slices(callbacks.generate(30000), workdir, f"a{time.monotonic_ns()}", 1)
            load.run_wrk(server.port, prefix, 2, threads=1, connections=32)
            top = load.run_wrk(server.port, prefix, 5, threads=1, connections=32).rps
            rate = top / 2
            print(f"\n== {database}: {top:,.0f} acks/s at full speed; constant {rate:,.0f}/s", flush=True)
            found = {name: [] for name in SITUATIONS}
            for r in range(rounds):
                for name in (SITUATIONS if r % 2 == 0 else SITUATIONS[::-1]):
                    found[name].append(situation(name, server, url, rate, seconds))
    alone = statistics.median(run["p99"] for run in found["alone"])
    noise = max(run["p99"] for run in found["alone"])  # the most "alone" varied from itself
    for name, runs in found.items():
        p99 = statistics.median(run["p99"] for run in runs)
        each = " / ".join(f"{run['p99']:.1f}" for run in runs)
        beside = [t for run in runs for t in run["beside"]]
        note = ""
        if name == "3 console tabs" or name == "operator clicking":
            note = f"{len(beside):,} pages, p50 {_p(beside, 50):.0f} ms, p95 {_p(beside, 95):.0f} ms"
        elif name.startswith("sending"):
            sent = [run["sends"] for run in runs]
            note = (f"{sum(s[0] for s in sent):,} sent, queued->sent p50 {statistics.median(s[1] for s in sent):.2f} s, "
                    f"p95 {statistics.median(s[2] for s in sent):.2f} s; POST p95 {_p(beside, 95):.0f} ms")
        lost = sum(run["non-200"] + run["unanswered"] for run in runs)
        inside = "" if name == "alone" else ("yes" if p99 <= noise else "no")
        rows.append(f"| {database} | {name} | {rate:,.0f} | {statistics.median(run['p50'] for run in runs):.1f} | "
                    f"{each} | {p99 / alone:.2f} | {inside} | {lost} | {note} |")
    return rows


def send_ceiling(database: str, workdir: Path) -> str:
    """2,000 messages queued before the app starts, SEND_RATE out of the way: how fast the outbox empties."""
    from receiver.storage import Storage

    with servers.fresh_database(database, workdir) as url:
        servers.init_database(url)
        storage = Storage(url, 30)
        try:
            for k in range(CEILING_MESSAGES):
                storage.outbox.queue({"to": "447700900123", "from": "447700900456", "channel": "sms",
                                    "message_type": "text", "text": f"m{k}"})
        finally:
            storage.dispose()
        began = time.time()
        with project_with_simulator(url, workdir, 100000):
            engine = sqlalchemy.create_engine(url)
            try:
                deadline, left = time.monotonic() + 600, CEILING_MESSAGES
                while left and time.monotonic() < deadline:
                    time.sleep(0.2)
                    with engine.connect() as conn:
                        left = conn.execute(sqlalchemy.text(
                            "SELECT count(*) FROM outbox WHERE state IN ('queued', 'sending')")).scalar()
                        first, last = conn.execute(sqlalchemy.text(
                            "SELECT min(sent_at), max(sent_at) FROM outbox")).one()
            finally:
                engine.dispose()
    if left:
        raise RuntimeError(f"{left} messages were still unsent after 600 s")
    row = (f"| {database} | {CEILING_MESSAGES:,} queued before start; first sent {first - began:.1f} s after the "
           f"start, the last {last - first:.1f} s later | {(CEILING_MESSAGES - 1) / (last - first):,.0f} messages/s |")
    print(row, flush=True)
    return row


def console_with_history(database: str, count: int, workdir: Path) -> list[str]:
    rows = []
    with servers.fresh_database(database, workdir) as url:
        servers.init_database(url)
        print(f"\n== {database}: seeding {count:,} events", flush=True)
        history.seed(url, count)
        history.analyse(url)
        with servers.serve_project(servers.Gunicorn(), url, workdir, env={"ADMIN_TOKEN": history.ADMIN_TOKEN}) as srv:
            session = operator(srv.port)
            for label, page in pages(srv.port, session, url).items():
                times = [timed_get(session, page) for _ in range(25)][5:]
                rows.append(f"| {database} | {label} | {count:,} | {_p(times, 50):.1f} | {_p(times, 95):.1f} |")
                print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    load.require_wrk()
    databases = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in databases and (problem := servers.postgres_problem()):
        print(f"PostgreSQL skipped: {problem}")
        databases.remove("postgres")
    work = Path(tempfile.mkdtemp(prefix="bench-alongside-"))
    out = ["| database | beside the callbacks | callbacks/s | ack p50 ms | ack p99 ms, each round | median p99 / alone's | "
           "within alone's rounds | not 200 | beside |", "|---|---|---|---|---|---|---|---|---|"]
    for database in databases:
        out += measure(database, args.rounds, args.seconds, work)
    out += ["", "| database | outbox with SEND_RATE out of the way | rate |", "|---|---|---|"]
    out += [send_ceiling(database, work) for database in databases]
    if args.history:
        out += ["", "| database | console page | events stored | p50 ms | p95 ms |", "|---|---|---|---|---|"]
        for database in databases:
            out += console_with_history(database, args.history, work)
    print("\n" + "\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
