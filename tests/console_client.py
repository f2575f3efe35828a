"""Helpers for the console tests: log a Flask test client in, and read the CSRF token off a page."""
from __future__ import annotations

import re

from tests.conftest import ADMIN_TOKEN

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    return _CSRF.search(html).group(1)


def login(client, token: str = ADMIN_TOKEN):
    """Log in through the form, as a browser does; returns the login POST's response."""
    form = client.get("/ui/login").get_data(as_text=True)
    return client.post("/ui/login", data={"token": token, "csrf_token": csrf_of(form)})


def csrf(client) -> str:
    """The logged-in session's CSRF token, as the pages carry it."""
    return csrf_of(client.get("/ui/").get_data(as_text=True))
