"""The worker's tuning, in one place: how many events it claims, how long a batch may take, how often it
writes outcomes. Each figure was measured (bench/mechanisms.py; bench/README.md has the receipts).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    max_batch: int = 100  # events claimed at once
    batch_seconds: float = 0.5  # a batch is sized to take about this long
    gather_seconds: float = 0.05  # after a short batch, how long to let the next one gather
    settle_every: int = 10  # outcomes written together (what a killed worker may have dispatched but not marked)
    prune_every_seconds: float = 3600.0

    def next_batch(self, seconds_per_event: float) -> int:
        """The size of the next batch: large while handlers are quick, one event at a time when a handler
        is slow (its claims would otherwise wait on it)."""
        return max(1, min(self.max_batch, int(self.batch_seconds / max(seconds_per_event, 1e-6))))

    def settle_now(self, pending: int, since_settled: float) -> bool:
        """Write the outcomes gathered so far: SETTLE_EVERY of them, or some that have waited a batch's time."""
        return pending >= self.settle_every or (pending > 0 and since_settled >= self.batch_seconds)


POLICY = Policy()
