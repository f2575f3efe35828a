"""receiver.storage.stats: how the queue is doing, the one definition metrics, doctor, readiness, the API and
the console share."""
import time

import sqlalchemy

from devkit import samples
from receiver.storage.schema import workers


def test_processing_rows_count_as_stuck_in_stats_once_their_worker_is_gone(app, vonage, storage):
    vonage.status(samples.message_status("delivered"))
    storage.inbox.claim("gone:1:1", lease_seconds=300, limit=1)
    assert storage.stats.collect().stuck == 0
    with storage.engine.begin() as conn:
        conn.execute(sqlalchemy.update(workers).values(seen_at=time.time() - 60))
    assert storage.stats.collect().stuck == 1
