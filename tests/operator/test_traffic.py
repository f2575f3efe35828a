"""The per-minute answer counts the console shows: counted in memory, written by each process, added up."""
import time

from devkit import samples
from receiver.operator.traffic import Traffic, summary


def test_answers_are_counted_by_sender_and_outcome_and_survive_a_flush(app, vonage, storage):
    vonage.status(samples.message_status("delivered"))
    payload = samples.message_status("read", "whatsapp")
    vonage.status(payload)
    vonage.status(payload)  # a repeat
    vonage.status(samples.message_status("read"), token="forged.token.here")
    app.extensions["traffic"].flush()

    rows = storage.stats.traffic_since(time.time() - 120)
    assert {(r["api_key"], r["outcome"]): r["count"] for r in rows} == {
        ("a1b2c3d4", "stored"): 2, ("a1b2c3d4", "duplicate"): 1, ("", "rejected"): 1}
    found = summary(rows)
    assert found["by_outcome"] == {"stored": 2, "duplicate": 1, "rejected": 1}
    assert found["p50_ms"] is not None and found["p99_ms"] >= found["p50_ms"]


def test_a_second_flush_overwrites_this_process_rows_instead_of_adding(storage):
    traffic = Traffic(storage)
    traffic.count("stored", 0.004, "k1", "app-1")
    traffic.flush()
    traffic.count("stored", 0.300, "k1", "app-1")
    traffic.flush()
    traffic.flush()  # nothing new: nothing written twice
    (row,) = storage.stats.traffic_since(time.time() - 120)
    assert (row["count"], row["application_id"]) == (2, "app-1")
    assert summary([row])["p50_ms"] == 5 and summary([row])["p99_ms"] == 500


def test_counts_the_database_refused_are_written_at_the_next_flush(storage, monkeypatch):
    traffic = Traffic(storage)
    traffic.count("stored", 0.01, None, None)
    real_save = storage.stats.save_traffic
    monkeypatch.setattr(storage.stats, "save_traffic", lambda *a: (_ for _ in ()).throw(OSError("down")))
    traffic.flush()
    monkeypatch.setattr(storage.stats, "save_traffic", real_save)
    traffic.flush()
    (row,) = storage.stats.traffic_since(time.time() - 120)
    assert (row["api_key"], row["count"]) == ("", 1)
