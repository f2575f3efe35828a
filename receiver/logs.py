"""Logging: one JSON object per line on stdout (LOG_FORMAT=text for humans), level from LOG_LEVEL.

Fields passed with `extra=` become JSON members, so a callback's line carries kind, message id,
status, outcome and latency as data, not prose.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from flask import Flask

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def init_app(app: Flask) -> None:
    """Send the app's logs to stdout, once per process (the platform collects stdout)."""
    root = logging.getLogger()
    if any(getattr(h, "_receiver", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler._receiver = True
    if app.config["LOG_FORMAT"] == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(app.config["LOG_LEVEL"].upper())
    # Alembic announces its dialect every time the app checks the schema revision at start;
    # an actual migration still logs ("Running upgrade ...") at WARNING through migrate.upgrade.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
