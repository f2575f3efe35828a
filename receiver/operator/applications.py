"""Point a Vonage application (and, optionally, the account's SMS URLs) at this receiver.

Talks to Vonage's configuration APIs with `requests`; the planning functions are pure. Must not import
Flask or touch the database: the CLI calls in here, never the other way round.
"""

from __future__ import annotations

import copy
import difflib
import json
from urllib.parse import quote, quote_plus, urlsplit

import requests

from receiver.kinds import KINDS

# The application's and the account's setting for each webhook, and the path this receiver serves it on.
WEBHOOK_PATHS = {kind.url_setting: kind.path for kind in KINDS.values()}
MESSAGES_VERSIONS = ("v1", "v0.1")

# Fields a GET returns that a PUT does not take (a PUT takes name, capabilities, privacy, keys.public_key).
# Only these are dropped: the PUT replaces the whole application, so anything we do not know about is
# sent back untouched rather than silently reset.
READ_ONLY_FIELDS = ("id", "_links")


class VonageAPIError(Exception):
    """A Vonage configuration call failed; the message says what to fix. `status` is None without a reply."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class VonageClient:
    """The three configuration calls this project makes, with errors turned into `VonageAPIError`."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        api_base: str = "https://api.nexmo.com",
        rest_base: str = "https://rest.nexmo.com",
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ):
        if not api_key or not api_secret:
            raise ValueError("a Vonage API key and secret are required (VONAGE_API_KEY, VONAGE_API_SECRET)")
        self.api_key = api_key
        self.api_secret = api_secret
        self.api_base = api_base.rstrip("/")
        self.rest_base = rest_base.rstrip("/")
        self.timeout = timeout
        # Without a session, `requests.request` opens and closes one per call, so nothing leaks.
        self._http = session if session is not None else requests

    def get_application(self, app_id: str) -> dict:
        """Fetch one application from the Applications API v2."""
        return self._request("GET", self._application_url(app_id), app_id=app_id)

    def put_application(self, app_id: str, body: dict) -> dict:
        """Replace one application's configuration with `body` (a PUT replaces the whole object)."""
        return self._request("PUT", self._application_url(app_id), app_id=app_id, json=body)

    def update_account_settings(self, mo_url: str | None, dr_url: str | None) -> dict:
        """Set the account's default SMS URLs; None leaves a URL as it is, "" unsets it."""
        form = {}
        if mo_url is not None:
            form["moCallBackUrl"] = mo_url
        if dr_url is not None:
            form["drCallBackUrl"] = dr_url
        # The account API predates Basic auth: its spec takes the credentials as query parameters.
        return self._request(
            "POST",
            f"{self.rest_base}/account/settings",
            params={"api_key": self.api_key, "api_secret": self.api_secret},
            data=form,
            basic_auth=False,
        )

    def _application_url(self, app_id):
        if not app_id:
            raise ValueError("an application id is required")
        return f"{self.api_base}/v2/applications/{quote(app_id, safe='')}"

    def _request(self, method, url, *, app_id=None, basic_auth=True, **kwargs):
        auth = (self.api_key, self.api_secret) if basic_auth else None
        try:
            response = self._http.request(
                method,
                url,
                auth=auth,
                timeout=self.timeout,
                headers={"Accept": "application/json"},
                **kwargs,
            )
        # ConnectTimeout is both a Timeout and a ConnectionError; it reads best as a timeout.
        except requests.Timeout:
            raise VonageAPIError(
                f"Vonage did not answer {method} {url} within {self.timeout:g}s: "
                "check this machine can reach Vonage, then retry"
            ) from None
        except requests.ConnectionError as exc:
            # `from None`: the chained exception would print the query string, api_secret included.
            raise VonageAPIError(
                f"Could not connect to Vonage at {url} ({self._redact(_connection_reason(exc))}): "
                "check network access, DNS and any HTTPS proxy settings"
            ) from None
        except requests.RequestException as exc:
            raise VonageAPIError(f"Request to Vonage at {url} failed: {self._redact(str(exc))}") from None

        if response.ok:
            try:
                return response.json()
            except ValueError:
                raise VonageAPIError(
                    f"Vonage answered {method} {url} with {response.status_code} but the body is not JSON",
                    response.status_code,
                ) from None
        raise VonageAPIError(self._error_message(method, url, response, app_id), response.status_code)

    def _error_message(self, method, url, response, app_id):
        status = response.status_code
        problem = _describe_problem(response)
        if status == 401:
            return (
                f"Vonage rejected the API key/secret ({status}): "
                "check VONAGE_API_KEY and VONAGE_API_SECRET"
            )
        if status == 403:
            return (
                f"Vonage refused access ({status}): this API key may not manage that resource "
                f"(a subaccount key?). {problem}"
            )
        if status == 404 and app_id is not None:
            return (
                f"No application {app_id} on this account ({status}): "
                "check --application-id / VONAGE_APPLICATION_ID"
            )
        if status in (400, 422) and app_id is not None:
            return f"Vonage refused the application update ({status}): {problem}"
        if status in (400, 422):
            # The account API saves a URL only after that URL answered 200 to a plain GET.
            return (
                f"Vonage refused the account settings ({status}): {problem}. Vonage saves an SMS "
                "webhook URL only if it answers 200 OK to a GET: check the receiver is deployed "
                "and reachable at that URL"
            )
        if status == 429:
            return f"Vonage is rate limiting these requests ({status}): wait a moment and retry"
        if status >= 500:
            return f"Vonage had a server error ({status}) on {method} {url}: retry later. {problem}"
        return f"Vonage answered {status} to {method} {url}: {problem}"

    def _redact(self, text):
        # Covers the secret as typed and as it appears URL-encoded in a query string.
        for secret in {self.api_secret, quote_plus(self.api_secret), quote(self.api_secret, safe="")}:
            if secret:
                text = text.replace(secret, "***")
        return text


def webhook_urls(base_url: str) -> dict[str, str]:
    """Map Vonage's field names to this deployment's webhook URLs under `base_url`.

    :raises ValueError: if `base_url` is not an absolute http(s) URL without query or fragment.
    """
    base = (base_url or "").strip()
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base URL must look like https://host[/prefix], got {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base URL must not have a query string or fragment, got {base_url!r}")
    base = base.rstrip("/")
    return {name: base + path for name, path in WEBHOOK_PATHS.items()}


def plan_application_update(app: dict, base_url: str, version: str = "v1") -> dict:
    """Return the full PUT body: `app` with only the Messages webhook URLs and version changed."""
    if version not in MESSAGES_VERSIONS:
        raise ValueError(f"messages version must be one of {MESSAGES_VERSIONS}, got {version!r}")
    urls = webhook_urls(base_url)
    body = writable_copy(app)
    capabilities = _child(body, "capabilities")
    messages = _child(capabilities, "messages")
    webhooks = _child(messages, "webhooks")
    for name in ("inbound_url", "status_url"):
        # Update in place so any other per-URL setting Vonage stores there is kept.
        webhook = _child(webhooks, name)
        webhook["address"] = urls[name]
        webhook["http_method"] = "POST"
    messages["version"] = version
    return body


def diff_application(old: dict, new: dict) -> str:
    """A unified diff of two application bodies as pretty JSON; empty when they are equal."""
    lines = difflib.unified_diff(_pretty_lines(old), _pretty_lines(new), fromfile="current", tofile="planned")
    return "".join(lines)


def configure_application(
    client: VonageClient, app_id: str, base_url: str, dry_run: bool = False
) -> tuple[str, bool]:
    """GET the application, point its Messages webhooks here and PUT it back if anything changed.

    Returns `(diff_text, changed)`. With `dry_run`, or when nothing changes, no PUT is sent.
    """
    webhook_urls(base_url)  # A bad base URL should fail before any network call.
    current = client.get_application(app_id)
    planned = plan_application_update(current, base_url)
    # Compare with what a PUT could carry, so dropping `id` and `_links` does not count as a change.
    diff_text = diff_application(writable_copy(current), planned)
    changed = bool(diff_text)
    if changed and not dry_run:
        client.put_application(app_id, planned)
    return diff_text, changed


def configure_sms(client: VonageClient, base_url: str, dry_run: bool = False) -> dict:
    """Point the account's default inbound-SMS and delivery-receipt URLs here.

    Returns the form fields that would be sent when `dry_run`, otherwise Vonage's reply
    (`mo-callback-url`, `dr-callback-url`, ...).
    """
    urls = webhook_urls(base_url)
    if dry_run:
        return {"moCallBackUrl": urls["moCallBackUrl"], "drCallBackUrl": urls["drCallBackUrl"]}
    return client.update_account_settings(urls["moCallBackUrl"], urls["drCallBackUrl"])


def writable_copy(app: dict) -> dict:
    """What a PUT takes back of a GET: no id or _links, and of the keys only the public key."""
    body = copy.deepcopy(app)
    for field in READ_ONLY_FIELDS:
        body.pop(field, None)
    # Send the public key back unchanged so the PUT cannot clear it; never echo anything else in `keys`.
    keys = body.pop("keys", None)
    if isinstance(keys, dict) and keys.get("public_key"):
        body["keys"] = {"public_key": keys["public_key"]}
    return body


def _child(parent, name):
    if not isinstance(parent.get(name), dict):
        parent[name] = {}
    return parent[name]


def _pretty_lines(body):
    return (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").splitlines(keepends=True)


def _describe_problem(response):
    """Summarise a Vonage error body: RFC 7807 problem JSON, the older error-code form, or raw text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:200] if text else "no details in the response"
    if not isinstance(body, dict):
        return str(body)[:200]
    if "error-code-label" in body:
        return str(body["error-code-label"])
    parts = [str(body[key]) for key in ("title", "detail") if body.get(key)]
    invalid = [item for item in body.get("invalid_parameters") or [] if isinstance(item, dict)]
    if invalid:
        fields = ", ".join(f"{item.get('name', '?')} ({item.get('reason', 'invalid')})" for item in invalid)
        parts.append(f"invalid parameters: {fields}")
    return ": ".join(parts) if parts else json.dumps(body)[:200]


def _connection_reason(exc):
    # requests wraps urllib3's MaxRetryError, whose `.reason` holds the useful part ("Connection refused").
    wrapped = exc.args[0] if exc.args else exc
    reason = str(getattr(wrapped, "reason", wrapped))
    return reason.rpartition(": ")[2] or reason
