"""Where one worker loop's time goes: statements by count and time, commits, and a cProfile summary,
while it drains 3,000 stored callbacks of the realistic mix (micro.worker_rate) on one database.

    .venv/bin/python bench/worker_profile.py postgresql+psycopg://postgres@127.0.0.1:5432/NAME   # an empty database
    .venv/bin/python bench/worker_profile.py sqlite:////tmp/profile.sqlite3

Nothing here is imported by the project.
"""
from __future__ import annotations

import collections
import cProfile
import pstats
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import micro  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402


def main(url: str) -> None:
    count, spent, commits = collections.Counter(), collections.Counter(), collections.Counter()

    @event.listens_for(Engine, "before_cursor_execute")
    def before(conn, cursor, statement, params, context, executemany):
        conn.info["started"] = time.perf_counter()

    @event.listens_for(Engine, "after_cursor_execute")
    def after(conn, cursor, statement, params, context, executemany):
        key = " ".join(statement.split())[:70]
        count[key] += 1
        spent[key] += time.perf_counter() - conn.info["started"]

    @event.listens_for(Engine, "commit")
    def on_commit(conn):
        commits["commits"] += 1

    profile = cProfile.Profile()
    profile.enable()
    rate = micro.worker_rate(url, 3000)
    profile.disable()
    print(f"{rate:,.0f} events/s under the profiler; {commits['commits']} commits; "
          f"{sum(spent.values()):.2f} s in {sum(count.values())} statements")
    for key, n in count.most_common(12):
        print(f"{n:6d} {spent[key] * 1000:8.0f} ms  {key}")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main(sys.argv[1])
