"""A local HTTP server standing in for Vonage's Applications API v2 and account settings API.

Test-only: real HTTP on 127.0.0.1, state in memory, every request recorded. It mimics what Vonage's
published API specs say it checks; it must not grow behaviour the real API is not known to have.
"""

import base64
import contextlib
import copy
import json
import sys
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_API_KEY = "abcd1234"
DEFAULT_API_SECRET = "Sup3r-s3cret&key"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict  # name -> list of values, as `parse_qs` returns them
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    def form(self):
        fields = parse_qs(self.body.decode(), keep_blank_values=True)
        return {name: values[-1] for name, values in fields.items()}


class FakeVonage:
    """State and behaviour of the fake; `running_fake_vonage` serves it over HTTP."""

    def __init__(self, applications=None, *, api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET,
                 probe=False, delay=0.0, validation_status=422):
        self.applications = {app_id: copy.deepcopy(app) for app_id, app in (applications or {}).items()}
        self.account = {
            "mo-callback-url": "",
            "dr-callback-url": "",
            "max-outbound-request": 30,
            "max-inbound-request": 30,
            "max-calls-per-second": 30,
        }
        self.requests = []
        self.api_key = api_key
        self.api_secret = api_secret
        self.probe = probe
        self.delay = delay
        # Vonage's published spec says 400 for an invalid application body; the default here is 422.
        # The client must read both the same way, so tests can pick either.
        self.validation_status = validation_status
        self.url = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def requests_to(self, method, path_prefix):
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def handle(self, recorded):
        """Return (status, JSON body) for one recorded request."""
        with self._lock:
            self.requests.append(recorded)
        if self.delay:
            self.stopping.wait(self.delay)
        if recorded.path.startswith("/v2/applications/"):
            return self._application(recorded, unquote(recorded.path[len("/v2/applications/"):]))
        if recorded.path == "/account/settings":
            return self._account_settings(recorded)
        return 404, _problem("not-found", "Not Found", f"No route for {recorded.path}")

    def _application(self, req, app_id):
        if req.headers.get("Authorization") != _basic(self.api_key, self.api_secret):
            return 401, _problem("unauthorized", "Invalid credentials supplied",
                                 "You did not provide correct credentials.")
        if req.method not in ("GET", "PUT"):
            return 405, _problem("wrong-verb", "Request method not allowed",
                                 f"Request method '{req.method}' not supported")
        with self._lock:
            if app_id not in self.applications:
                return 404, _problem("not-found", "Not Found",
                                     f"ID '{app_id}' does not exist, or you do not have access")
            if req.method == "GET":
                return 200, copy.deepcopy(self.applications[app_id])
            if not req.headers.get("Content-Type", "").startswith("application/json"):
                return 415, _problem("content-type-header", "Unsupported Content-Type header",
                                     "Unsupported Content-Type header provided. "
                                     "Must be one of the following: 'application/json'")
            try:
                body = req.json()
            except ValueError:
                return 400, _problem("payload-validation", "Bad Request", "The body is not valid JSON")
            invalid = _invalid_parameters(body)
            if invalid:
                detail = "The request failed due to validation errors"
                problem = _problem("payload-validation", "Bad Request", detail)
                return self.validation_status, {**problem, "invalid_parameters": invalid}
            self.applications[app_id] = self._replace_application(app_id, body)
            return 200, copy.deepcopy(self.applications[app_id])

    def _replace_application(self, app_id, body):
        # PUT replaces the configuration: whatever the body leaves out is gone, except the read-only parts.
        old = self.applications[app_id]
        new = {key: copy.deepcopy(value) for key, value in body.items()
               if key not in ("id", "_links", "keys")}
        new["id"] = app_id
        public_key = (body.get("keys") or {}).get("public_key") or (old.get("keys") or {}).get("public_key")
        if public_key:
            new["keys"] = {"public_key": public_key}
        new["_links"] = {"self": {"href": f"/v2/applications/{app_id}"}}
        return new

    def _account_settings(self, req):
        if req.query.get("api_key") != [self.api_key] or req.query.get("api_secret") != [self.api_secret]:
            return 401, {"error-code": "401", "error-code-label": "authentication failed"}
        if req.method != "POST":
            return 405, {"error-code": "405", "error-code-label": "method not allowed"}
        content_type = req.headers.get("Content-Type", "")
        if req.body and not content_type.startswith("application/x-www-form-urlencoded"):
            return 415, {"error-code": "415", "error-code-label": "form-urlencoded body expected"}
        form = req.form()
        # Unknown parameters (such as the misspelt `moCallbackUrl`) are ignored, not rejected.
        updates = {
            "mo-callback-url": form.get("moCallBackUrl"),
            "dr-callback-url": form.get("drCallBackUrl"),
        }
        updates = {key: value for key, value in updates.items() if value is not None}
        if self.probe:
            for url in updates.values():
                if url and (refusal := _probe(url)) is not None:
                    # The shape of this refusal is our guess: Vonage documents the check, not the error.
                    return 400, {"error-code": "400", "error-code-label": refusal}
        with self._lock:
            self.account.update(updates)
            return 200, dict(self.account)


@contextlib.contextmanager
def running_fake_vonage(applications=None, **options):
    """Serve a `FakeVonage` on 127.0.0.1 in a background thread; yields it with `.url` set.

    Use its `.url` as both `api_base` and `rest_base`. Options: api_key, api_secret, probe, delay,
    validation_status.
    """
    fake = FakeVonage(applications, **options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    server.daemon_threads = True
    server.handle_error = _ignore_disconnects(server.handle_error)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.stopping.set()  # Wakes requests sleeping in `delay` so shutdown does not wait for them.
        server.shutdown()
        server.server_close()
        thread.join()


def _handler_for(fake):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self._answer()

        do_PUT = do_POST = do_DELETE = do_PATCH = do_GET

        def _answer(self):
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            recorded = RecordedRequest(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers=dict(self.headers.items()),
                body=self.rfile.read(length) if length else b"",
            )
            try:
                status, body = fake.handle(recorded)
            except Exception as exc:  # A bug in the fake should fail the test loudly, not hang up.
                status, body = 500, _problem("internal-error", "Fake Vonage crashed", repr(exc))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format, *args):
            pass  # Keep pytest output clean; assertions use `fake.requests` instead.

    return Handler


def _ignore_disconnects(handle_error):
    # A client that timed out has hung up before the delayed reply; that is the point of the test.
    def handle(request, client_address):
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        handle_error(request, client_address)

    return handle


def _invalid_parameters(body):
    if not isinstance(body, dict):
        return [{"name": "(body)", "reason": "must be a JSON object"}]
    invalid = []
    if not isinstance(body.get("name"), str) or not body["name"].strip():
        invalid.append({"name": "name", "reason": "is required"})
    messages = ((body.get("capabilities") or {}).get("messages") or {})
    for name, webhook in (messages.get("webhooks") or {}).items():
        if isinstance(webhook, dict) and webhook.get("http_method", "POST") != "POST":
            invalid.append({"name": f"capabilities.messages.webhooks.{name}.http_method",
                            "reason": "must be one of: POST"})
    if messages.get("version", "v1") not in ("v1", "v0.1"):
        invalid.append({"name": "capabilities.messages.version", "reason": "must be one of: v1, v0.1"})
    return invalid


def _probe(url):
    """GET `url` as Vonage does before saving it; return None on 200, else why it was refused."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        status = exc.code
    except OSError as exc:
        return f"Callback URL {url} could not be reached: {exc}"
    if status != 200:
        return f"Callback URL {url} answered {status}, expected 200 OK"
    return None


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _problem(kind, title, detail):
    return {
        "type": f"https://developer.nexmo.com/api-errors#{kind}",
        "title": title,
        "detail": detail,
        "instance": uuid.uuid4().hex,
    }
