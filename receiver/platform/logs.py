"""Logging: one JSON object per line on stdout (LOG_FORMAT=text for humans), level from LOG_LEVEL.

Fields passed with `extra=` become JSON members, so a callback's line carries kind, message id,
status, outcome and latency as data, not prose.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
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


class Tally:
    """Log lines for what may come in floods (refused requests): the first of each kind at once, the
    rest of the window as one line with their count, at most one line per kind every `seconds`."""

    MAX_SOURCES = 5  # addresses named in one line; the rest are counted

    def __init__(self, logger: logging.Logger, message: str, seconds: float = 10.0):
        self.logger, self.message, self.seconds = logger, message, seconds
        self._lock = threading.Lock()
        self._open: dict[str, tuple[float, int, dict[str, int]]] = {}  # what -> (window end, count, sources)

    def note(self, what: str, source: str | None) -> None:
        """Count one; logs now only if it is the first of its kind in a window."""
        now = time.monotonic()
        if (window := self._open.get(what)) is not None and window[0] <= now:
            self.flush(now)  # the window that ended goes out before a new one opens
        with self._lock:
            window = self._open.get(what)
            if window is None:
                self._open[what] = (now + self.seconds, 0, {})
                first = True
            else:
                end, count, sources = window
                if len(sources) < self.MAX_SOURCES or source in sources:
                    sources[source or "-"] = sources.get(source or "-", 0) + 1
                self._open[what] = (end, count + 1, sources)
                first = False
        if first:
            self.logger.warning(self.message, {"count": 1, "sources": source or "-", "what": what})

    def flush(self, now: float | None = None) -> None:
        """Log, and close, every window that has ended with more than its first line in it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            ended = [(what, w) for what, w in self._open.items() if w[0] <= now]
            for what, _ in ended:
                del self._open[what]
        for what, (_, count, sources) in ended:
            if count:
                named = ", ".join(sources)
                if sum(sources.values()) < count:
                    named += " and others"
                self.logger.warning(self.message, {"count": count, "sources": named, "what": what})


class RequestLineWithoutQuery(logging.Filter):
    """Drops the query string from the request lines of werkzeug's server (`flask run`, `dev.py serve`):
    an SMS API callback sent by GET carries the message text, and the sender's number, in its query."""

    def filter(self, record: logging.LogRecord) -> bool:
        # werkzeug logs '<address> - - [<date>] "%s" %s %s' with (request line, status, size).
        args = record.args
        if isinstance(args, tuple) and len(args) == 3 and isinstance(args[0], str) and '"%s"' in str(record.msg):
            record.args = (_without_query(args[0]), *args[1:])
        return True


def _without_query(line: str) -> str:
    """'GET /path?text=a b HTTP/1.1' -> 'GET /path HTTP/1.1' (the query's text may hold spaces once decoded)."""
    start = line.find("?")
    if start < 0:
        return line
    _, version_mark, version = line[start:].rpartition(" HTTP/")
    return line[:start] + (version_mark + version if version_mark else "")


def init_app(app: Flask) -> None:
    """Send the app's logs to stdout, once per process (the platform collects stdout)."""
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(f, RequestLineWithoutQuery) for f in werkzeug.filters):
        werkzeug.addFilter(RequestLineWithoutQuery())
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
