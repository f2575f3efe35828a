"""The one way this project runs something in the background: a step repeated until a stop, never dying.

The worker's loop, the sender, the heartbeat and the counters' flushers each run as `forever(...)`: a
step that raises is logged (with its traceback, or in one line for a failure it expects, such as the
database being down) and run again after a wait that doubles from RESTART_SECONDS[0] to [1]; a step
that succeeds resets that wait. Nothing here starts at import.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

RESTART_SECONDS = (1.0, 30.0)  # the first and the longest wait before a failed step runs again


def forever(name: str, step: Callable[[], float | None], stop: threading.Event, log: logging.Logger, *,
            expected: tuple[type[BaseException], ...] = (), expected_wait: float = 2.0,
            on_failure: Callable[[], None] | None = None) -> None:
    """Run `step()` until `stop` is set; it returns how long to wait before the next run (None or 0: at
    once). An `expected` failure is one line, and the step runs again after `expected_wait` (the database
    coming back should be seen at once); any other calls `on_failure` and backs off. Blocks: call it from
    the thread that should run it, or use `start`."""
    delay = RESTART_SECONDS[0]
    while not stop.is_set():
        try:
            wait = step()
        except expected as exc:
            log.warning("%s: %s; again in %.0f s", name, exc, expected_wait)
            stop.wait(expected_wait)
            continue
        except Exception:
            log.exception("%s failed; it starts again in %.0f s", name, delay)
        else:
            delay = RESTART_SECONDS[0]
            if wait:
                stop.wait(wait)
            continue
        if on_failure is not None:
            on_failure()
        stop.wait(delay)
        delay = min(RESTART_SECONDS[1], delay * 2)


def start(name: str, step: Callable[[], float | None], stop: threading.Event, log: logging.Logger,
          **options) -> threading.Thread:
    """`forever(...)` in a daemon thread of its own, named `name`."""
    thread = threading.Thread(target=forever, args=(name, step, stop, log), kwargs=options, name=name, daemon=True)
    thread.start()
    return thread
