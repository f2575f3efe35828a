"""Waking the worker process from the web processes: one byte on a datagram socket pair the gunicorn
master makes before it forks (gunicorn.conf.py), so a stored callback is processed at once, not at
the next poll. A web process never waits on it: a send that would block is dropped (a wake is
already pending). Without the pair (the development server, `flask worker`), nothing is sent.
"""
from __future__ import annotations

import os
import socket

ENVIRONMENT = "RECEIVER_WAKE_FDS"  # "<receiving fd>,<sending fd>", set by the master


def make_pair() -> None:
    """In the gunicorn master: the pair, inherited by every worker it forks."""
    receiving, sending = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for end in (receiving, sending):
        end.setblocking(False)
        os.set_inheritable(end.fileno(), True)
    os.environ[ENVIRONMENT] = f"{receiving.detach()},{sending.detach()}"


def forget() -> None:
    """In the gunicorn master: processes forked from now on have no worker process to wake."""
    os.environ.pop(ENVIRONMENT, None)


def _fds() -> tuple[int, int] | None:
    found = os.environ.get(ENVIRONMENT, "")
    receiving, _, sending = found.partition(",")
    return (int(receiving), int(sending)) if receiving.isdigit() and sending.isdigit() else None


def available() -> bool:
    """This process was forked by a master that runs the worker in a process of its own."""
    return _fds() is not None


def send() -> None:
    """Wake the worker process (a web process, after storing a callback or queueing a message)."""
    fds = _fds()
    if fds is not None:
        try:
            os.write(fds[1], b"\0")
        except OSError:  # full (a wake is pending already) or gone: the worker's poll still finds the work
            pass


def receiving_fd() -> int | None:
    fds = _fds()
    return None if fds is None else fds[0]


def drain() -> None:
    """Read every pending wake (the worker process, when its socket is readable)."""
    fd = receiving_fd()
    try:
        while fd is not None and os.read(fd, 64):
            pass
    except OSError:
        pass
