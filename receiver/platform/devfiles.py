"""Files development mode makes under instance/ on first use and keeps: the signing secret, the console's
admin token, the simulator's private key and application id. Each is created with O_EXCL and mode 0600,
so two processes starting together agree on one, and no other user can read it. Production never
makes them.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from receiver.platform.config import ConfigError


def made_once(instance_path: str, name: str, make: Callable[[], str]) -> tuple[str, bool]:
    """(the text of instance file `name`, stripped; whether this call made it), `make()` giving the
    text of a new one. A file another process made first is kept, and read once it is written."""
    path = os.path.join(instance_path, name)
    for _ in range(100):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except FileNotFoundError:
            pass
        else:
            if text:
                return text, False
            time.sleep(0.01)  # made by another process, which is still writing it
            continue
        os.makedirs(instance_path, exist_ok=True)
        text = make().strip()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: keep that one
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        return text, True
    raise ConfigError(f"INSTANCE_PATH: {path} is empty: delete it and it is made again")
