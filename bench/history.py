"""A big history: the project on the database that months of traffic with retention off leave behind,
against an empty one, in the same run: acknowledgements, the worker's claim, the API's list
queries and `flask events prune`.

The history is seeded with set-based SQL (generate_series; a recursive CTE on SQLite) into the
tables the project's migrations create (`flask init-db`): N events over six months, nearly all
done (one in DEAD_EVERY dead), every body a ~330-byte Messages-style JSON, two events per
message, one `messages` row per message and one `message_history` row per done event.
"""
from __future__ import annotations

import http.client
import statistics
import subprocess
import time
from pathlib import Path

import load
import observe
import refs
import rounds
import servers
import sqlalchemy
from report import table

SPAN_SECONDS = 180 * 86400
DEAD_EVERY = 1000
CLAIM_BATCH = 100  # the worker's largest batch (Policy.max_batch in receiver/worker/policy.py)
ADMIN_TOKEN = "bench-admin-token-5d2b9c0e"
BODY = ("'{\"message_uuid\":\"' || mid || '\",\"to\":\"447700900123\",\"from\":\"447700900456\","
        "\"timestamp\":\"2025-03-14T10:07:20Z\",\"status\":\"delivered\",\"channel\":\"whatsapp\","
        "\"client_ref\":\"order-' || i || '\",\"usage\":{\"price\":\"0.0147\",\"currency\":\"EUR\"},"
        "\"whatsapp\":{\"conversation\":{\"id\":\"f0a3c2b1d4e5a6b7c8d9e0f1a2b3c4d5\"}}}'")


def claim_seconds(database_url: str, batches: int, limit: int = CLAIM_BATCH) -> list[float]:
    """Seconds each of `batches` claims of up to `limit` due events took, made as the worker makes them.

    The benchmark's one call into the project's storage API: adapt this function when that API changes.
    """
    from receiver.storage import Storage

    storage = Storage(database_url, 5.0)
    try:
        times = []
        for _ in range(batches):
            start = time.perf_counter()
            storage.inbox.claim("bench-history", 300.0, limit)
            times.append(time.perf_counter() - start)
        return times
    finally:
        storage.dispose()


def message_id(k: int) -> str:
    """The id the seed gives message k (what the SQL below computes from i // 2)."""
    return f"{k:08x}-0000-4000-8000-{k:012x}"


def _insert_events(conn, first: int, last: int, start: float, step: float, *, pending: bool = False) -> None:
    """Events first..last, received from `start` on, every `step` seconds."""
    sqlite = conn.dialect.name == "sqlite"
    mid = ("printf('%08x-0000-4000-8000-%012x', i / 2, i / 2)" if sqlite else
           "lpad(to_hex(i / 2), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i / 2), 12, '0')")
    body = f"CAST({BODY} AS BLOB)" if sqlite else f"convert_to({BODY}, 'UTF8')"
    dead = f"i % {DEAD_EVERY} = 0"
    state, attempts, processed, error = (("'pending'", "0", "NULL", "NULL") if pending else (
        f"CASE WHEN {dead} THEN 'dead' ELSE 'done' END", f"CASE WHEN {dead} THEN 8 ELSE 1 END", "t + 0.05",
        f"CASE WHEN {dead} THEN 'RuntimeError: upstream unavailable' END"))
    series = "s" if sqlite else "generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS s(i)"
    sql = f"""
        INSERT INTO events (kind, dedup_key, body, query, content_type, headers, message_id, status, received_at,
                            last_delivery_at, deliveries, state, attempts, available_at, processed_at, last_error)
        SELECT kind, mid || '|' || COALESCE(status, '') || '|' || i, {body}, '', 'application/json', '{{}}', mid,
               status, t, t, 1, {state}, {attempts}, t, {processed}, {error}
        FROM (SELECT i, kind, mid, t, CASE kind WHEN 'message-status' THEN
                     (CASE WHEN i % 2 = 0 THEN 'submitted' ELSE 'delivered' END)
                     WHEN 'delivery-receipt' THEN 'delivered' END AS status
              FROM (SELECT i, {mid} AS mid, :start + i * :step AS t,
                           CASE WHEN i % 100 < 40 THEN 'message-status' WHEN i % 100 < 55 THEN 'inbound-message'
                                WHEN i % 100 < 67 THEN 'inbound-sms' ELSE 'delivery-receipt' END AS kind
                    FROM {series}) AS a) AS b"""
    if sqlite:
        sql = "WITH RECURSIVE s(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM s WHERE i < :last)" + sql
    conn.execute(sqlalchemy.text(sql), {"first": first, "last": last, "start": start, "step": step})


def seed(database_url: str, count: int) -> float:
    """Store `count` finished events and their message state; returns the seconds it took."""
    began = time.perf_counter()
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as conn:
            _insert_events(conn, 1, count, time.time() - SPAN_SECONDS, SPAN_SECONDS / count)
            conn.execute(sqlalchemy.text("""
                INSERT INTO messages (message_id, direction, channel, status, status_rank, to_number, from_number,
                                      incomplete, created_at, updated_at)
                SELECT message_id, CASE WHEN min(kind) LIKE 'inbound%' THEN 'inbound' ELSE 'outbound' END,
                       'whatsapp', max(COALESCE(status, 'received')), 2, '447700900123', '447700900456', false,
                       min(received_at), max(received_at)
                FROM events GROUP BY message_id"""))
            conn.execute(sqlalchemy.text("""
                INSERT INTO message_history (message_id, event_id, status, applied, recorded_at)
                SELECT message_id, id, COALESCE(status, 'received'), true, processed_at FROM events
                WHERE state = 'done'"""))
    finally:
        engine.dispose()
    analyse(database_url)
    return time.perf_counter() - began


def analyse(database_url: str) -> None:
    """PostgreSQL's autovacuum would have analysed months-old tables; SQLite analyses nothing by itself."""
    if database_url.startswith("postgresql"):
        engine = sqlalchemy.create_engine(database_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("VACUUM ANALYZE events, messages, message_history"))
        finally:
            engine.dispose()


def add_due(database_url: str, count: int) -> None:
    """`count` pending events, due now, after everything else: what the claim timing takes."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as conn:
            top = conn.execute(sqlalchemy.text("SELECT COALESCE(max(id), 0) FROM events")).scalar_one()
            _insert_events(conn, 10**9 + top, 10**9 + top + count - 1, time.time() - 1, 0.0, pending=True)
    finally:
        engine.dispose()


def api_ms(port: int, path: str, count: int) -> list[float]:
    """Milliseconds per GET of `path` on one keep-alive connection, `count` times."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            response = conn.getresponse()
            response.read()
            times.append((time.perf_counter() - start) * 1000)
            if response.status != 200:
                raise RuntimeError(f"GET {path} answered {response.status}")
        return times
    finally:
        conn.close()


def prune_seconds(database_url: str, root: Path = refs.ROOT) -> tuple[float, str]:
    """Wall time of `flask --app app events prune --older-than 30d`, and what it printed."""
    start = time.perf_counter()
    done = subprocess.run([str(servers.BIN / "flask"), "--app", "app", "events", "prune", "--older-than", "30d"],
                          cwd=root, env=servers.project_env(database_url, root=root), capture_output=True,
                          text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"flask events prune failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _p(values: list[float], p: float) -> float:
    return load.percentile(sorted(values), p)


def measure(database: str, count: int, plan, overrides: servers.Gunicorn, workdir: Path, *,
            expected_rps: float = 1500.0) -> list[list[str]]:
    """Rows of the history table for `database`: each figure on an empty database and on one with `count` events."""
    queries = {"GET /api/events?limit=50": "/api/events?limit=50",
               "GET /api/events?state=dead": "/api/events?state=dead",
               "GET /api/events?message_id=X": f"/api/events?message_id={message_id(count // 4)}",
               "GET /api/messages?limit=50": "/api/messages?limit=50"}
    figures: dict[str, dict[str, list[float]]] = {"empty": {}, "big": {}}
    with servers.fresh_database(database, workdir) as empty, servers.fresh_database(database, workdir) as big:
        urls = {"empty": empty, "big": big}
        for url in urls.values():
            servers.init_database(url)
        print(f"\n== history ({database}): seeding {count:,} events", flush=True)
        seeded = seed(big, count)
        print(f"   seeded in {seeded:.1f} s", flush=True)
        analyse(empty)
        for r in range(plan.rounds):
            for which in rounds.order(["empty", "big"], r):
                name = "project, empty database" if which == "empty" else f"project, {count:,} events stored"
                contender = refs.Contender(name, database, "project", overrides)
                with servers.serve_project(overrides, urls[which], workdir, name=contender.label,
                                           env={"ADMIN_TOKEN": ADMIN_TOKEN}) as server:
                    result = rounds.measure(server, contender, plan, workdir, expected_rps=expected_rps,
                                            round_index=r)
                    figures[which].setdefault("acks/s", []).append(result.acks_per_s)
                    figures[which].setdefault("ack p99 ms", []).append(result.outcome.p99)
                    if r == 0:
                        observe.wait_drained(urls[which], plan.drain_timeout)
                        for label, path in queries.items():
                            figures[which][label] = api_ms(server.port, path, plan.api_requests)
        for which, url in urls.items():
            add_due(url, plan.claim_batches * CLAIM_BATCH)
            figures[which]["claim of 100 due events (worker's batch)"] = [
                1000 * s for s in claim_seconds(url, plan.claim_batches)]
            seconds, said = prune_seconds(url)
            figures[which]["`flask events prune --older-than 30d`, s"] = [seconds]
            print(f"   prune on the {which} database: {seconds:.1f} s ({said})", flush=True)
    rows = [[database, "seeding (set-based SQL)", "-", f"{seeded:.1f} s", "-"]]
    for label, values in figures["big"].items():
        before = figures["empty"][label]
        if len(values) > 1 and not label.startswith("ack"):
            cells = [f"{_p(v, 50):,.1f} / {_p(v, 95):,.1f}" for v in (before, values)]
            ratio, label = _p(values, 50) / _p(before, 50), label + " (ms, p50 / p95)"
        else:  # one figure per round: the median, and each round's
            fmt = ",.0f" if label == "acks/s" else ",.1f"
            cells = [format(statistics.median(v), fmt) + ("" if len(v) < 2 else
                     " (" + " / ".join(format(x, fmt) for x in v) + ")") for v in (before, values)]
            ratio = statistics.median(values) / statistics.median(before)
        rows.append([database, label, *cells, f"{ratio:.2f}"])
    return rows


def render(rows: list[list[str]], count: int) -> list[str]:
    return [f"## A big history: an empty database vs {count:,} stored events (retention off), same run", "",
            *table(["database", "what", "empty", f"{count:,} events", "ratio"], rows)]
