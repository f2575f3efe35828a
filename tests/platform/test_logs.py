"""receiver.platform.logs: what can come in floods is logged a line per kind and window, with its count."""
from __future__ import annotations

import logging

from devkit import samples
from receiver.platform.logs import Tally
from receiver.webhooks import guard
from tests.conftest import PATHS, compact


def test_a_flood_is_its_first_line_then_one_line_with_the_count(caplog):
    tally = Tally(logging.getLogger("test.tally"), "refused %(count)d from %(sources)s: %(what)s", seconds=60)
    with caplog.at_level(logging.WARNING, logger="test.tally"):
        for n in range(1000):
            tally.note("431 too large", f"192.0.2.{n % 2}")
        tally.note("408 too slow", "192.0.2.9")
        assert [r.getMessage() for r in caplog.records] == ["refused 1 from 192.0.2.0: 431 too large",
                                                           "refused 1 from 192.0.2.9: 408 too slow"]
        tally.flush(now=float("inf"))  # every window over
    assert [r.getMessage() for r in caplog.records][2:] == ["refused 999 from 192.0.2.1, 192.0.2.0: 431 too large"]


def test_a_window_names_a_few_sources_and_counts_the_rest(caplog):
    tally = Tally(logging.getLogger("test.tally"), "%(count)d from %(sources)s", seconds=60)
    with caplog.at_level(logging.WARNING, logger="test.tally"):
        for n in range(50):
            tally.note("x", f"198.51.100.{n}")
        tally.flush(now=float("inf"))
    last = caplog.records[-1].getMessage()
    assert last.startswith("49 from 198.51.100.1, ") and last.endswith(" and others")
    assert last.count("198.51.100.") == Tally.MAX_SOURCES


def test_forgeries_are_logged_a_line_per_reason_not_a_line_each(app, client, caplog, monkeypatch):
    # The guard's tally is the process's: a forgery another test sent in the last 10 s would still be
    # counted in its open window, and this test's first line never logged. This test starts its own.
    monkeypatch.setattr(guard, "rejected", Tally(guard.log, guard.rejected.message, guard.rejected.seconds))
    status_body = compact(samples.message_status("delivered"))
    with caplog.at_level(logging.INFO):
        for _ in range(100):
            client.post(PATHS["message-status"], data=status_body, headers={"Authorization": "Bearer nope"})
    lines = [r.getMessage() for r in caplog.records if r.name == "receiver.webhooks"]
    assert lines == ["rejected 1 request(s) from 127.0.0.1: malformed_token on /webhooks/message-status"]
