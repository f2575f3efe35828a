"""The storage's reading repositories: the reads (what the API, the CLI and the console show), the stats
and the console's sessions. Like receiver.storage.repositories' (whose door they share), every database
failure leaves here as StorageUnavailable.
"""
from __future__ import annotations

import threading
import time

from sqlalchemy.engine import Engine

from receiver.storage import console, events, rejections, sessions, state, stats, traffic
from receiver.storage.repositories import Inbox, _doors
from receiver.storage.stats import Stats


@_doors
class Reads:
    """What the API, the CLI and the console show. Reads on their own connection: never the SQLite writer's turn."""

    def __init__(self, engine: Engine, inbox: Inbox):
        self.engine, self._inbox = engine, inbox

    def event(self, event_id: int) -> dict | None:
        return events.get_event(self.engine, event_id)

    def stored(self, event_id: int):
        """The stored row of one event, the request as received (body bytes, query, headers); None if unknown."""
        return events.stored_row(self.engine, event_id)

    def events(self, *, kind=None, state=None, message_id=None, limit: int = 50) -> list[dict]:
        return events.list_events(self.engine, kind=kind, state=state, message_id=message_id, limit=limit)

    def message(self, message_id: str) -> dict | None:
        return state.get_message(self.engine, message_id)

    def messages(self, *, direction: str | None = None, limit: int = 50) -> list[dict]:
        return state.list_messages(self.engine, direction=direction, limit=limit)

    def rejections(self, limit: int = 100) -> list[dict]:
        """The newest rejection rows (each counts the requests of one second, reason, address and path);
        this process's are written first."""
        self._inbox.flush_rejections()
        return rejections.recent(self.engine, limit)

    def rejections_by_reason(self, since: float) -> dict[str, int]:
        self._inbox.flush_rejections()
        return rejections.by_reason(self.engine, since)

    def feed(self, filters: console.Filters, *, before: int | None = None, after: int | None = None,
             limit: int = console.FEED_PAGE) -> console.FeedPage:
        """A keyset page of events, newest first, below `before` or (live updates) above `after`."""
        return console.feed(self.engine, filters, before=before, after=after, limit=limit)

    def timeline(self, message_id: str) -> console.Timeline | None:
        """One message: its state, status history, events and conversation; None when unknown."""
        return console.timeline(self.engine, message_id)

    def problem_events(self, limit: int) -> list:
        """The newest failed, dead and invalid events with their errors."""
        return console.problem_events(self.engine, limit)

    def senders(self, since: float) -> list[dict]:
        """Per api_key and application_id: callbacks answered since `since` and when the last arrived."""
        return console.senders(self.engine, int(since // 60))


@_doors
class Statistics:
    """The queue's figures, the workers alive, and the per-minute traffic counts."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._last: tuple[float, Stats | None] = (0.0, None)

    def collect(self, now: float | None = None) -> Stats:
        """Counts by state, due backlog, oldest due, stuck claims, live workers."""
        return stats.collect(self.engine, now)

    def shared(self) -> Stats:
        """`collect()`, one query at a time: callers that come while one runs share its answer. Probes
        and scrapes can come in floods (anyone may ask /readyz); this keeps them to one query in flight."""
        asked_at = time.monotonic()
        with self._lock:
            finished_at, figures = self._last
            if figures is not None and finished_at >= asked_at:  # answered while this call waited
                return figures
            figures = stats.collect(self.engine)
            self._last = (time.monotonic(), figures)
            return figures

    def queue_figures(self, now: float | None = None) -> Stats:
        """`collect()` for every console page: the same figures without counting done events."""
        return stats.collect(self.engine, now, console.FEW_STATES)

    def live_workers(self) -> int:
        return stats.live(self.engine)

    def save_traffic(self, process: str, rows: list[dict]) -> None:
        """Overwrite this process's per-minute answer counts (see receiver.operator.traffic)."""
        traffic.save(self.engine, process, rows)

    def traffic_since(self, since: float) -> list[dict]:
        """Every process's per-minute answer counts since `since` (epoch seconds)."""
        return traffic.since(self.engine, int(since // 60))

    def prune_traffic(self, before: float) -> int:
        return traffic.prune(self.engine, int(before // 60))


@_doors
class Sessions:
    """The console's sessions, by the hash of their id (storage.sessions)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def open(self, id_hash: str, token_mark: str, now: float) -> None:
        sessions.open_one(self.engine, id_hash, token_mark, now)

    def find(self, id_hash: str):
        return sessions.find(self.engine, id_hash)

    def touch(self, id_hash: str, now: float) -> None:
        sessions.touch(self.engine, id_hash, now)

    def close(self, id_hash: str) -> None:
        sessions.close(self.engine, id_hash)

    def prune(self, *, opened_before: float, seen_before: float) -> int:
        return sessions.prune(self.engine, opened_before=opened_before, seen_before=seen_before)
