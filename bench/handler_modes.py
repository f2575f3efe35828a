"""The project with every handler replaced, to show that a slow or failing handler does not slow
acknowledgements: `gunicorn 'handler_modes:create_app()'` with bench/ on the path and
BENCH_HANDLER=sleep (each handler sleeps 5 s) or BENCH_HANDLER=raise (each handler raises).
"""
import os
import time

import handlers
from app import create_app as create_project_app

SLEEP_SECONDS = 5.0


def sleep_5s(event) -> None:
    time.sleep(SLEEP_SECONDS)


def always_raise(event) -> None:
    raise RuntimeError("benchmark: this handler fails on every event")


MODES = {"sleep": sleep_5s, "raise": always_raise}


def create_app():
    handler = MODES[os.environ["BENCH_HANDLER"]]
    for table in (handlers.STATUS_HANDLERS, handlers.INBOUND_HANDLERS):
        for key in table:
            table[key] = handler
    handlers.DEFAULT_STATUS_HANDLER = handlers.DEFAULT_INBOUND_HANDLER = handler
    return create_project_app()
