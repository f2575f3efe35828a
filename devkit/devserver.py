"""What `dev.py serve` runs: the app, and after a reload that broke it, a stand-in that says why in one line.

Under the reloader a start error (a dispatch-table typo, a bad setting) would otherwise be a traceback
and then werkzeug's HTML 500 for every request, webhooks included. Here it is one line on the terminal
and, until the next edit reloads the server, a JSON 503 for every request: Vonage retries a 503, so no
callback is lost while the developer fixes it. The first start still stops with the error. Development only.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

import click

import app as application


def create_app():
    try:
        return application.create_app()
    except Exception as exc:
        if os.environ.get("WERKZEUG_RUN_MAIN") != "true":
            raise  # the first start: `flask run` prints it and stops
        if isinstance(exc, click.ClickException):
            line = exc.format_message()
            print(f"Error: {line} (fix it and save: the server reloads)", file=sys.stderr, flush=True)
        else:  # a bug, say a syntax error in a handler: its traceback is what helps
            traceback.print_exc()
            line = f"{exc.__class__.__name__}: {exc}"
        return _not_started(line)


def _not_started(line: str):
    body = json.dumps({"error": "not_started", "message": line}).encode()

    def app(environ, start_response):
        start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(body))), ("Retry-After", "5")])
        return [body]

    return app
