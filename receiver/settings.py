"""Settings for the code in handlers/: `setting("AUTO_REPLY_TEXT")`, the one way a handler reads one.

While the worker runs a handler, a setting is the app's value: what `create_app` was given, else the
environment, parsed as the app parses it (docs/configuration.md). A name the app does not know (one of
yours, say CRM_URL) is read from the environment. Outside the worker (a unit test calling a handler
directly) the environment is read the same way.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from receiver.platform import config

_current: ContextVar[Mapping[str, Any] | None] = ContextVar("receiver_settings", default=None)


def setting(name: str, default: Any = None) -> Any:
    """The value of setting `name` for the handler running now; `default` when it is not set."""
    values = _current.get()
    if values is None:
        values = {**config.defaults(), **config.from_env()}
    value = values[name] if name in values else os.environ.get(name)
    return default if value is None or value == "" else value


@contextmanager
def using(values: Mapping[str, Any] | None) -> Iterator[None]:
    """Make `values` (an app's config; None: the environment) what `setting` reads, in this thread, for the
    `with` block."""
    token = _current.set(values)
    try:
        yield
    finally:
        _current.reset(token)
