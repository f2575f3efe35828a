"""Queue health: is this receiver keeping the account's callback queue moving? The figures of the bar on
every page (cheap: storage.stats.queue_figures) and of /ui/health (storage.stats.collect, traffic by window, senders).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from receiver.operator import traffic
from receiver.operator.retire import Verdict

HOUR, DAY = 3600, 86400


@dataclass(frozen=True)
class Bar:
    queue: object  # storage.Stats without `done`
    hour: dict  # traffic.summary of the last hour

    @property
    def answered(self) -> int:
        return sum(self.hour["by_outcome"].values())

    @property
    def level(self) -> str:
        """ok, warn (problems kept, or callbacks refused) or bad (stalled, or no live worker with a backlog)."""
        q = self.queue
        if q.stalled or q.stuck or (q.backlog and not q.live_workers):
            return "bad"
        if q.by_state["dead"] or q.by_state["invalid"] or self.hour["by_outcome"].get("unavailable"):
            return "warn"
        return "ok"


def bar(storage, now: float | None = None) -> Bar:
    now = time.time() if now is None else now
    return Bar(storage.stats.queue_figures(now), traffic.summary(storage.stats.traffic_since(now - HOUR)))


@dataclass(frozen=True)
class Sender:
    """One API key or application: callbacks answered in the kept traffic, the last one, the verdict."""

    name: str
    count: int
    verdict: Verdict


@dataclass(frozen=True)
class Health:
    stats: object  # storage.Stats
    windows: list  # (label, traffic.summary)
    api_keys: list
    applications: list
    unattributed: int  # callbacks refused before any key was trusted (rejections, bad requests)


def health(storage, now: float | None = None) -> Health:
    now = time.time() if now is None else now
    senders = storage.reads.senders(now - traffic.KEEP_DAYS * DAY)
    return Health(
        stats=storage.stats.collect(now),
        windows=[("last hour", traffic.summary(storage.stats.traffic_since(now - HOUR))),
                 ("last 24 hours", traffic.summary(storage.stats.traffic_since(now - DAY)))],
        api_keys=_by(senders, "api_key", now),
        applications=_by(senders, "application_id", now),
        unattributed=sum(s["count"] for s in senders if not s["api_key"]),
    )


def _by(senders: list[dict], column: str, now: float) -> list[Sender]:
    found: dict[str, list] = {}
    for s in senders:
        if s[column]:
            count, last = found.get(s[column], (0, 0.0))
            found[s[column]] = (count + s["count"], max(last, s["last_at"]))
    return sorted((Sender(name, count, Verdict(last, now)) for name, (count, last) in found.items()),
                  key=lambda s: -s.verdict.last_at)
