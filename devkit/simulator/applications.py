"""Vonage's configuration APIs as the simulator plays them: Applications API v2 and account settings.

State in memory. Mimics what Vonage's published specs say it checks; it must not grow behaviour the real
API is not known to have.
"""
from __future__ import annotations

import base64
import copy
import hmac
import threading
import urllib.error
import urllib.request
from urllib.parse import unquote

from devkit.simulator.wire import Answer, RecordedRequest, problem

APPLICATIONS_PATH = "/v2/applications/"
ACCOUNT_SETTINGS_PATH = "/account/settings"


class ConfigurationAPI:
    """GET/PUT /v2/applications/{id} with HTTP Basic, and POST /account/settings with query-string credentials."""

    def __init__(self, applications: dict | None, *, api_key: str, api_secret: str, probe: bool = False,
                 validation_status: int = 422):
        self.applications = {app_id: copy.deepcopy(app) for app_id, app in (applications or {}).items()}
        self.account = {
            "mo-callback-url": "",
            "dr-callback-url": "",
            "max-outbound-request": 30,
            "max-inbound-request": 30,
            "max-calls-per-second": 30,
        }
        self.api_key = api_key
        self.api_secret = api_secret
        self.probe = probe  # GET each new SMS URL before saving it, as Vonage does before it saves an SMS callback URL
        # Vonage's published spec says 400 for an invalid application body; the default here is 422.
        # A client must read both the same way, so tests can pick either.
        self.validation_status = validation_status
        self._lock = threading.Lock()

    def handle(self, req: RecordedRequest) -> Answer | None:
        """The answer for a configuration request; None when the path is not one of these APIs."""
        if req.path.startswith(APPLICATIONS_PATH):
            return self._application(req, unquote(req.path[len(APPLICATIONS_PATH):]))
        if req.path == ACCOUNT_SETTINGS_PATH:
            return self._account_settings(req)
        return None

    def _application(self, req, app_id):
        expected = _basic(self.api_key, self.api_secret).encode()
        if not hmac.compare_digest(req.headers.get("Authorization", "").encode(), expected):
            return Answer(401, _problem("unauthorized", "Invalid credentials supplied",
                                        "You did not provide correct credentials."))
        if req.method not in ("GET", "PUT"):
            return Answer(405, _problem("wrong-verb", "Request method not allowed",
                                        f"Request method '{req.method}' not supported"))
        with self._lock:
            if app_id not in self.applications:
                return Answer(404, _problem("not-found", "Not Found",
                                            f"ID '{app_id}' does not exist, or you do not have access"))
            if req.method == "GET":
                return Answer(200, copy.deepcopy(self.applications[app_id]))
            if not req.headers.get("Content-Type", "").startswith("application/json"):
                return Answer(415, _problem("content-type-header", "Unsupported Content-Type header",
                                            "Unsupported Content-Type header provided. "
                                            "Must be one of the following: 'application/json'"))
            try:
                body = req.json()
            except ValueError:
                return Answer(400, _problem("payload-validation", "Bad Request", "The body is not valid JSON"))
            invalid = _invalid_parameters(body)
            if invalid:
                refusal = _problem("payload-validation", "Bad Request", "The request failed due to validation errors")
                return Answer(self.validation_status, {**refusal, "invalid_parameters": invalid})
            self.applications[app_id] = self._replaced(app_id, body)
            return Answer(200, copy.deepcopy(self.applications[app_id]))

    def _replaced(self, app_id, body):
        # PUT replaces the configuration: whatever the body leaves out is gone, except the read-only parts.
        old = self.applications[app_id]
        new = {key: copy.deepcopy(value) for key, value in body.items() if key not in ("id", "_links", "keys")}
        new["id"] = app_id
        public_key = (body.get("keys") or {}).get("public_key") or (old.get("keys") or {}).get("public_key")
        if public_key:
            new["keys"] = {"public_key": public_key}
        new["_links"] = {"self": {"href": f"{APPLICATIONS_PATH}{app_id}"}}
        return new

    def _account_settings(self, req):
        if req.query.get("api_key") != [self.api_key] or req.query.get("api_secret") != [self.api_secret]:
            return Answer(401, {"error-code": "401", "error-code-label": "authentication failed"})
        if req.method != "POST":
            return Answer(405, {"error-code": "405", "error-code-label": "method not allowed"})
        if req.body and not req.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return Answer(415, {"error-code": "415", "error-code-label": "form-urlencoded body expected"})
        form = req.form()
        # Unknown parameters (such as the misspelt `moCallbackUrl`) are ignored, not rejected.
        updates = {"mo-callback-url": form.get("moCallBackUrl"), "dr-callback-url": form.get("drCallBackUrl")}
        updates = {key: value for key, value in updates.items() if value is not None}
        if self.probe:
            for url in updates.values():
                if url and (refusal := _probe(url)) is not None:
                    # The shape of this refusal is our guess: Vonage documents the check, not the error.
                    return Answer(400, {"error-code": "400", "error-code-label": refusal})
        with self._lock:
            self.account.update(updates)
            return Answer(200, dict(self.account))


def _invalid_parameters(body):
    if not isinstance(body, dict):
        return [{"name": "(body)", "reason": "must be a JSON object"}]
    invalid = []
    if not isinstance(body.get("name"), str) or not body["name"].strip():
        invalid.append({"name": "name", "reason": "is required"})
    messages = (body.get("capabilities") or {}).get("messages") or {}
    for name, webhook in (messages.get("webhooks") or {}).items():
        if isinstance(webhook, dict) and webhook.get("http_method", "POST") != "POST":
            invalid.append({"name": f"capabilities.messages.webhooks.{name}.http_method",
                            "reason": "must be one of: POST"})
    if messages.get("version", "v1") not in ("v1", "v0.1"):
        invalid.append({"name": "capabilities.messages.version", "reason": "must be one of: v1, v0.1"})
    return invalid


def _probe(url):
    """GET `url` as Vonage does before saving it; return None on 200, else why it was refused."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # Vonage calls the URL directly
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
    return problem(f"https://developer.nexmo.com/api-errors#{kind}", title, detail)
