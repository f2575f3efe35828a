"""The app and a stand-in deployment served on loopback in threads, for the command-line tests: `flask vonage
trigger` and `doctor` and `flask events resend` send real HTTP to them."""
from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from werkzeug.serving import make_server

from receiver.storage import get_storage
from receiver.webhooks.keyring import Keyring
from receiver.webhooks.payloads import sms_params
from receiver.webhooks.signatures import SignatureError, verify_jwt, verify_sms
from receiver.worker.loop import Worker
from tests.conftest import SECRET, SMS_METHOD

MESSAGES_PATHS = ("/webhooks/message-status", "/webhooks/inbound-message")


def cli(app, *args):
    """Run `flask <args>` against `app`."""
    return app.test_cli_runner().invoke(args=list(args))


def verified(method, url, headers, body, keyring=Keyring([SECRET])):
    """The payload of a request Vonage could have sent.

    :raises SignatureError: when its signature does not verify with `keyring`.
    """
    parts = urlsplit(url)
    if parts.path in MESSAGES_PATHS:
        assert method == "POST"
        verify_jwt(headers.get("Authorization"), body, keyring)
        return json.loads(body)
    params = sms_params(parts.query, body, headers.get("Content-Type", ""))
    verify_sms(params, keyring, SMS_METHOD)
    return params


@contextlib.contextmanager
def serving(app):
    """The in-process app on a loopback port (its worker is the test's to run)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Verifier:
    """A stand-in deployment that only checks signatures: 200 and a record, or 401 and the reason."""

    def __init__(self, secret=SECRET):
        self.keyring = Keyring([secret])
        self.received = []  # (method, url path and query, headers, body, payload)

    def answer(self, method, target, headers, body):
        try:
            payload = verified(method, target, headers, body, self.keyring)
        except SignatureError as exc:
            return 401, {"error": exc.reason}
        self.received.append((method, target, headers, body, payload))
        return 200, None


@contextlib.contextmanager
def verifying_server(secret=SECRET):
    verifier = Verifier(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, reply = verifier.answer(self.command, self.path, dict(self.headers.items()), body)
            payload = json.dumps(reply).encode() if reply else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_GET

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    verifier.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield verifier
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def work(app):
    return Worker(get_storage(app), app.config, name="test-worker").run_until_idle()
