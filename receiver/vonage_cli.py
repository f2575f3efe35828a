"""`flask vonage trigger|configure|doctor` and `flask events resend`: this receiver seen from Vonage's side.

Sends signed callbacks exactly as Vonage does, points Vonage at a deployment, and says what is wrong.
The request path never imports this module. Every callback it sends goes through `send_signed`.
"""
from __future__ import annotations

import json
import os
import random
import shlex
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple
from urllib.parse import urlencode, urlsplit

import click
import requests
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from receiver import samples
from receiver.cli import events_cli
from receiver.guard import DEV_SECRET_FILE, get_guard
from receiver.storage import get_storage
from receiver.storage.stats import ALIVE_SECONDS
from receiver.payloads import MESSAGES_KINDS, sms_params
from receiver.signatures import sign_jwt, sign_sms
from receiver.vonage_api import (
    MESSAGES_VERSIONS,
    VonageAPIError,
    VonageClient,
    configure_application,
    configure_sms,
    webhook_urls,
)

# The Vonage setting that holds each kind's URL; vonage_api.WEBHOOK_PATHS maps it to our path.
URL_FIELDS = {
    "message-status": "status_url",
    "inbound-message": "inbound_url",
    "inbound-sms": "moCallBackUrl",
    "delivery-receipt": "drCallBackUrl",
}
# How SMS API callbacks arrive, per the dashboard's "Webhook format": GET, POST (form), POST-JSON.
VIAS = ("get", "form", "json")
# Vonage waits 3 s for a connection and 15 s for an answer before it retries (spec 6).
VONAGE_TIMEOUT = (3.0, 15.0)
SAMPLE_API_KEY = "a1b2c3d4"  # the api key in receiver/samples.py, used when VONAGE_API_KEY is not set


# -- sending: the one place a signed callback is built and sent ----------------------------------------
@dataclass(frozen=True)
class SignedRequest:
    """One callback as it goes over the wire."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Sent(NamedTuple):
    """What came back: the answer's status and how long it took, with the request that was sent."""

    request: SignedRequest
    status: int
    seconds: float
    error: str  # this app's error code from a JSON error body ("bad_signature"), else ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def sign_request(kind, payload, url, secret, api_key, method, via="json", application_id=None) -> SignedRequest:
    """The request Vonage would send to the `kind` webhook of the deployment at base `url`.

    Messages kinds: `payload` is a dict (sent as compact JSON) or the exact body bytes, under a fresh JWT.
    SMS API kinds: `payload` holds the parameters; they get `api_key`, a fresh timestamp, nonce and `sig`
    (SMS signature `method`) and go `via` the query string, a form body or a JSON body.

    :raises ValueError: `url` is not an absolute http(s) URL, or `method` or `via` is unknown.
    """
    target = webhook_urls(url)[URL_FIELDS[kind]]
    if kind in MESSAGES_KINDS:
        body = payload if isinstance(payload, bytes) else _compact(payload)
        token = sign_jwt(body, secret, api_key=api_key, application_id=application_id)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return SignedRequest("POST", target, headers, body)
    params = sign_sms(
        {**payload, "api-key": api_key}, secret, method, timestamp=int(time.time()), nonce=str(uuid.uuid4())
    )
    if via == "get":
        return SignedRequest("GET", f"{target}?{urlencode(params)}", {}, b"")
    if via == "form":
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        return SignedRequest("POST", target, form, urlencode(params).encode())
    if via == "json":
        return SignedRequest("POST", target, {"Content-Type": "application/json"}, _compact(params))
    raise ValueError(f"via must be one of {VIAS}, got {via!r}")


def send_signed(kind, payload, url, secret, api_key, method, via="json", *, application_id=None,
                timeout=VONAGE_TIMEOUT) -> Sent:
    """Send one signed callback (see `sign_request`) and wait for the answer as long as Vonage would.

    :raises requests.RequestException: nothing answered in time (refused, DNS, TLS, timeout).
    """
    request = sign_request(kind, payload, url, secret, api_key, method, via, application_id)
    started = time.perf_counter()
    # A redirect is shown, not followed: nothing documents that Vonage follows one.
    response = requests.request(request.method, request.url, headers=request.headers, data=request.body or None,
                                timeout=timeout, allow_redirects=False)
    return Sent(request, response.status_code, time.perf_counter() - started, _error_code(response))


def curl_command(kind, payload, url, secret, api_key, method, via="json", application_id=None) -> str:
    """The same signed request as one copy-pasteable curl command."""
    request = sign_request(kind, payload, url, secret, api_key, method, via, application_id)
    method_args = [] if request.method == "GET" else ["-X", request.method]
    args = ["curl", "-sS", "-i", *method_args, request.url]
    for name, value in request.headers.items():
        args += ["-H", f"{name}: {value}"]
    if request.body:
        args += ["--data-binary", request.body.decode("utf-8")]
    return shlex.join(args)


def _compact(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _error_code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _signing(app: Flask, api_key: str | None = None) -> dict:
    """The keyword arguments that sign as this app verifies: its current secret for the api key."""
    api_key = api_key or app.config.get("VONAGE_API_KEY") or SAMPLE_API_KEY
    secrets = get_guard(app).keyring.secrets_for(api_key)
    if not secrets:
        raise click.ClickException(
            f"no signature secret for api key {api_key}: set VONAGE_SIGNATURE_SECRET "
            f"(or run with APP_ENV=development to use the generated {_dev_secret_path(app)})"
        )
    return {"secret": secrets[0], "api_key": api_key, "method": app.config["VONAGE_SIGNATURE_METHOD"],
            "application_id": app.config.get("VONAGE_APPLICATION_ID")}


def _dev_secret_path(app: Flask) -> str:
    return os.path.join(app.instance_path, DEV_SECRET_FILE)


# -- sample callbacks for `trigger` ------------------------------------------------------------------
@dataclass
class Callback:
    kind: str
    payload: dict
    description: str
    via: str = "json"


def _status_callbacks(statuses, channels, version: str, fields: dict) -> list[Callback]:
    """Each status on each channel, every one for a message of its own."""
    return [
        Callback("message-status", _with_fields(samples.message_status(status, channel, version), fields),
                 f"{status} status ({channel}, {version})")
        for channel in channels for status in statuses
    ]


def _inbound_callbacks(types_by_channel: dict, version: str, fields: dict) -> list[Callback]:
    """One inbound message of each type named for each channel."""
    return [
        Callback("inbound-message", _with_fields(samples.inbound_message(channel, message_type, version), fields),
                 f"inbound {message_type} ({channel}, {version})")
        for channel, types in types_by_channel.items() for message_type in types
    ]


def _sms_callbacks(text: str | None, parts: int | None, via: str, fields: dict) -> list[Callback]:
    """One inbound SMS, or a multipart one whose parts arrive in scrambled order, as they can."""
    params = _present({"msisdn": fields["from"], "to": fields["to"], "messageId": fields["message_uuid"]})
    if not parts:
        sms = samples.inbound_sms(text, **params) if text else samples.inbound_sms(**params)
        return [Callback("inbound-sms", sms, f"inbound SMS ({via})", via)]
    text = text or samples.inbound_sms()["text"]
    if parts > len(text):
        raise click.UsageError(f"--parts {parts} needs a text of at least {parts} characters")
    in_order = samples.inbound_sms_parts(text, parts, **params)
    order = list(range(parts))
    while order == sorted(order):
        random.shuffle(order)
    return [Callback("inbound-sms", in_order[i], f"inbound SMS part {i + 1}/{parts} ({via})", via) for i in order]


def _dlr_callbacks(status: str, via: str, fields: dict) -> list[Callback]:
    """One delivery receipt; in a receipt `msisdn` is the recipient of our SMS and `to` our sender ID."""
    params = _present({"msisdn": fields["to"], "to": fields["from"], "messageId": fields["message_uuid"],
                       "client-ref": fields["client_ref"]})
    return [Callback("delivery-receipt", samples.delivery_receipt(status, **params), f"{status} receipt ({via})", via)]


def _conversation(channel: str, version: str, fields: dict) -> list[Callback]:
    """One outbound message's statuses as Vonage can really deliver them, then the customer's reply."""
    sent_at = datetime.now(timezone.utc) - timedelta(seconds=30)
    outbound = {name: fields[name] for name in ("to", "from", "message_uuid", "client_ref")}
    submitted = _with_fields(samples.message_status("submitted", channel, version), outbound)
    same = {name: submitted[name] for name in ("message_uuid", "to", "from", "client_ref")}

    def status(name: str, after: int) -> dict:
        moment = sent_at + timedelta(seconds=after)
        return samples.message_status(name, channel, version, **same, timestamp=_iso(moment))

    submitted["timestamp"] = _iso(sent_at)
    delivered = status("delivered", 4)
    reply = samples.inbound_message(channel, "text", version, to=same["from"], **{"from": same["to"]})
    return [
        Callback("message-status", submitted, f"submitted ({channel}, {version})"),
        Callback("message-status", status("read", 20), "read"),
        Callback("message-status", delivered, "delivered, arriving after read (out of order)"),
        Callback("message-status", delivered, "delivered again (duplicate: a Vonage retry)"),
        Callback("inbound-message", _with_fields(reply, {"text": fields["text"]}), "inbound text reply"),
    ]


def _with_fields(payload: dict, fields: dict) -> dict:
    """`payload` with the --to/--from/--text/--message-uuid/--client-ref values given, in its own shape."""
    for name, value in fields.items():
        if value is None:
            continue
        current = payload.get(name)
        if name in ("to", "from") and isinstance(current, dict):  # v0.1: {"type": "sms", "number": ...}
            current["id" if "id" in current else "number"] = value
        elif name == "text" and "message" in payload:  # v0.1 inbound: message.content.text
            payload["message"]["content"]["text"] = value
        else:
            payload[name] = value
    return payload


def _present(params: dict) -> dict:
    return {name: value for name, value in params.items() if value is not None}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- commands ----------------------------------------------------------------------------------------
vonage_cli = AppGroup("vonage", help="Send signed sample callbacks, configure Vonage, check a deployment.")

WHATS = ("status", "inbound", "sms", "dlr", "conversation")
# The WHATs each trigger option means something for; given anywhere else it is a usage error.
OPTION_SCOPE = {
    "status": ("status", "dlr"),
    "channel": ("status", "inbound", "conversation"),
    "message_type": ("inbound",),
    "every": ("status", "inbound"),
    "via": ("sms", "dlr"),
    "parts": ("sms",),
    "version": ("status", "inbound", "conversation"),
    "text": ("inbound", "sms", "conversation"),
    "client_ref": ("status", "dlr", "conversation"),
}


@vonage_cli.command("trigger")
@click.argument("what", type=click.Choice(WHATS), default="conversation", required=False)
@click.option("--url", default="http://127.0.0.1:3000", show_default=True, help="Base URL of the receiver.")
@click.option("--status", type=click.Choice(sorted(set(samples.STATUSES + samples.DLR_STATUSES))),
              help="status: a Messages status (default delivered); dlr: a receipt status (default delivered).")
@click.option("--channel", type=click.Choice(samples.CHANNELS),
              help="Messages channel (default sms; whatsapp for conversation).")
@click.option("--type", "message_type", help="inbound: the message type (default text), e.g. image, location.")
@click.option("--all", "every", is_flag=True,
              help="status: every status; inbound: every message type; on every channel unless --channel.")
@click.option("--via", type=click.Choice(VIAS), help="SMS API webhook format (default json).")
@click.option("--parts", type=click.IntRange(min=2), help="sms: a multipart SMS of N parts, sent in scrambled order.")
@click.option("--version", type=click.Choice(MESSAGES_VERSIONS), help="Messages webhook version (default v1).")
@click.option("--to", help="Recipient: the customer for statuses and receipts, us for inbound messages.")
@click.option("--from", "from_", help="Sender: us for statuses and receipts, the customer for inbound messages.")
@click.option("--text", help="Text of an inbound text message or SMS.")
@click.option("--message-uuid", "--message-id", "message_uuid", help="message_uuid (Messages) or messageId (SMS API).")
@click.option("--client-ref", help="client_ref / client-ref of our sent message.")
@click.option("--print", "print_only", is_flag=True, help="Print each signed request as a curl command; send nothing.")
def trigger_command(what, url, print_only, **options):
    """Send realistic, correctly signed callbacks to a running receiver, as Vonage would.

    WHAT is status, inbound, sms (an SMS API inbound SMS), dlr (an SMS API delivery receipt) or
    conversation (default: an outbound message's statuses, a duplicate, one out of order, and a reply).
    Signed with this app's signature secret, so run it with the same settings as the receiver.
    """
    for param in click.get_current_context().command.params:
        if options.get(param.name) not in (None, False) and what not in OPTION_SCOPE.get(param.name, WHATS):
            raise click.UsageError(f"{param.opts[0]} does not apply to `trigger {what}`")
    try:
        webhook_urls(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    callbacks = _trigger_callbacks(what, options)
    signing = _signing(current_app)
    if print_only:
        for callback in callbacks:
            click.echo(f"# {callback.description}")
            click.echo(curl_command(callback.kind, callback.payload, url, via=callback.via, **signing))
        return

    width = max(len(callback.description) for callback in callbacks)
    refused = []
    for callback in callbacks:
        path = urlsplit(webhook_urls(url)[URL_FIELDS[callback.kind]]).path
        try:
            sent = send_signed(callback.kind, callback.payload, url, via=callback.via, **signing)
        except requests.ConnectionError:
            raise click.ClickException(
                f"nothing answers at {url}: is the receiver running? Start it with `python3 dev.py serve` "
                "(port 3000) or point --url at it"
            ) from None
        except requests.Timeout:
            click.echo(f"{'':4} {path:<28} {callback.description:<{width}}  no answer in {VONAGE_TIMEOUT[1]:g} s")
            refused.append("timeout")
            continue
        outcome = f"{sent.status} {sent.error}".strip()
        click.echo(f"{sent.request.method:<4} {path:<28} {callback.description:<{width}}  {outcome:<4} "
                   f"{sent.seconds * 1000:5.0f} ms")
        if not sent.ok:
            refused.append(sent.error or str(sent.status))
    if refused:
        hint = ""
        if {"bad_signature", "bad_sig", "unknown_api_key"} & set(refused):
            hint = (": the receiver checks a different signature secret or api key than this configuration "
                    "(run both with the same VONAGE_SIGNATURE_SECRET, VONAGE_API_KEY and APP_ENV)")
        raise click.ClickException(f"{len(refused)} of {len(callbacks)} callbacks were not accepted{hint}")
    if what == "conversation":
        click.echo(f"message {callbacks[0].payload['message_uuid']}: should end at read, with the late "
                   "delivered kept in its history but not applied")


def _trigger_callbacks(what: str, options: dict) -> list[Callback]:
    fields = {name: options[name] for name in ("to", "from_", "text", "message_uuid", "client_ref")}
    fields["from"] = fields.pop("from_")
    version, channel, every = options["version"] or "v1", options["channel"], options["every"]
    if every and (options["status"] or options["message_type"]):
        raise click.UsageError("--all sends every status or type: leave out --status and --type")
    if what == "status":
        status = options["status"] or "delivered"
        if status not in samples.STATUSES:
            raise click.UsageError(f"--status for a Messages status is one of {', '.join(samples.STATUSES)}")
        channels = [channel] if channel else (samples.CHANNELS if every else ["sms"])
        return _status_callbacks(samples.STATUSES if every else [status], channels, version, fields)
    if what == "inbound":
        channels = [channel] if channel else (samples.CHANNELS if every else ["sms"])
        if every:
            return _inbound_callbacks({c: samples.INBOUND_TYPES[c] for c in channels}, version, fields)
        message_type = options["message_type"] or "text"
        if message_type not in samples.INBOUND_TYPES[channels[0]]:
            known = ", ".join(samples.INBOUND_TYPES[channels[0]])
            raise click.UsageError(f"--type for {channels[0]} is one of {known}")
        if fields["text"] and message_type != "text":
            raise click.UsageError("--text needs --type text")
        return _inbound_callbacks({channels[0]: [message_type]}, version, fields)
    if what == "sms":
        return _sms_callbacks(fields["text"], options["parts"], options["via"] or "json", fields)
    if what == "dlr":
        status = options["status"] or "delivered"
        if status not in samples.DLR_STATUSES:
            raise click.UsageError(f"--status for a delivery receipt is one of {', '.join(samples.DLR_STATUSES)}")
        return _dlr_callbacks(status, options["via"] or "json", fields)
    return _conversation(channel or "whatsapp", version, fields)


def _vonage_api_options(command):
    # Hidden: tests point them at a local stand-in for Vonage; nobody else needs them.
    command = click.option("--api-base", hidden=True, help="Applications API base URL.")(command)
    return click.option("--rest-base", hidden=True, help="Account API base URL.")(command)


def _vonage_client(app: Flask, api_base: str | None, rest_base: str | None) -> VonageClient:
    key, secret = app.config.get("VONAGE_API_KEY"), app.config.get("VONAGE_API_SECRET")
    if not key or not secret:
        raise click.ClickException(
            "VONAGE_API_KEY and VONAGE_API_SECRET must be set (Vonage dashboard -> API settings)"
        )
    return VonageClient(key, secret, **_present({"api_base": api_base, "rest_base": rest_base}))


@vonage_cli.command("configure")
@click.option("--base-url", required=True, help="Public URL of this deployment, e.g. https://hooks.example.com")
@click.option("--application-id", help="The Vonage application to point here (default VONAGE_APPLICATION_ID).")
@click.option("--sms", is_flag=True, help="Also set the account's SMS API inbound and delivery-receipt URLs.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@_vonage_api_options
def configure_command(base_url, application_id, sms, dry_run, api_base, rest_base):
    """Point a Vonage application's Messages webhooks (and with --sms the SMS API URLs) at --base-url."""
    client = _vonage_client(current_app, api_base, rest_base)
    app_id = application_id or current_app.config.get("VONAGE_APPLICATION_ID")
    if not app_id and not sms:
        raise click.ClickException("no application: pass --application-id or set VONAGE_APPLICATION_ID")
    try:
        urls = webhook_urls(base_url)
        if app_id:
            diff, changed = configure_application(client, app_id, base_url, dry_run)
            if not changed:
                click.echo(f"application {app_id}: Messages webhooks already point at {base_url}")
            elif dry_run:
                click.echo(diff, nl=False)
                click.echo(f"dry run: application {app_id} not changed")
            else:
                click.echo(f"application {app_id}: inbound_url {urls['inbound_url']}")
                click.echo(f"application {app_id}: status_url  {urls['status_url']}")
        if sms:
            settings = configure_sms(client, base_url, dry_run)
            if dry_run:
                click.echo("dry run: would set " + ", ".join(f"{k}={v}" for k, v in settings.items()))
            else:
                click.echo(f"account: inbound SMS {settings.get('mo-callback-url')}, "
                           f"delivery receipts {settings.get('dr-callback-url')}")
    except (VonageAPIError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@click.command("resend")
@click.argument("event_id", type=int)
@click.option("--to", "base_url", required=True, help="Base URL of the other deployment, e.g. https://staging.example")
@with_appcontext
def resend_command(event_id: int, base_url: str) -> None:
    """Send a stored callback to another deployment, freshly signed, the way it first arrived."""
    row = get_storage(current_app).stored(event_id)
    if row is None:
        raise click.ClickException(f"no event {event_id}")
    headers = json.loads(row.headers or "{}")
    if row.kind in MESSAGES_KINDS:
        payload, via = row.body, "json"  # the stored bytes, unchanged: the new JWT hashes exactly them
        signing = _signing(current_app, headers.get("api_key"))
        signing["application_id"] = headers.get("application_id") or signing["application_id"]
    else:
        try:
            payload = sms_params(row.query, row.body, row.content_type)
        except ValueError as exc:
            raise click.ClickException(f"event {event_id} has a parameter twice ({exc}): not resent") from None
        # Read as sms_params reads it: query string, else a JSON body, else a form body.
        is_json = "json" in row.content_type or row.body.lstrip()[:1] == b"{"
        via = "get" if row.query else ("json" if is_json else "form")
        signing = _signing(current_app, payload.get("api-key"))
    try:
        sent = send_signed(row.kind, payload, base_url, via=via, **signing)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    except requests.RequestException as exc:
        raise click.ClickException(f"no answer from {base_url}: {exc.__class__.__name__}") from None
    outcome = f"{sent.status} {sent.error}".strip()
    click.echo(f"{sent.request.method} {sent.request.url.split('?')[0]}  event {event_id} ({row.kind}"
               f"{', ' + row.status if row.status else ''})  {outcome}  {sent.seconds * 1000:.0f} ms")
    if not sent.ok:
        raise click.ClickException(f"event {event_id} was not accepted ({outcome})")


# -- doctor ------------------------------------------------------------------------------------------
PENDING_WARN_SECONDS = 60
SLOW_ANSWER_SECONDS = 2.0  # Vonage allows 15 s; a receiver that stores and acknowledges needs far less
BAD_SIGNATURE_BURST = 5  # in 24 h: more than stray scanners, a sign that Vonage signs with another secret
MIN_SECRET_LENGTH = 16
# Values from docs, samples and .env templates: a secret that is one of these is not a secret.
EXAMPLE_SECRETS = {"yq9vd3ke7pl2sx8wr4tn6bm1cz5hj0af", "signature_secret", "signature-secret", "secret",
                   "changeme", "change-me", "your-signature-secret", "your_signature_secret"}


@dataclass
class Check:
    level: str  # OK, WARN, FAIL or SKIP
    name: str
    message: str
    fix: str = ""


@vonage_cli.command("doctor")
@click.option("--base-url", help="Public URL of this deployment: also check Vonage's settings and a signed round trip.")
@_vonage_api_options
def doctor_command(base_url, api_base, rest_base):
    """Check secret, database, worker, backlog and rejections; with --base-url, the Vonage side too.

    With --base-url it sends one signed sample status (client_ref vonage-doctor) and one sample inbound
    message to that deployment, where they are stored and dispatched like any callback.
    Exits 1 when any check FAILs.
    """
    app = current_app._get_current_object()
    storage = get_storage(app)
    now = time.time()
    checks = [_check_secret(app), _check_database(storage)]
    if checks[-1].level == "FAIL":
        checks.append(Check("SKIP", "worker, events", "not checked: fix the database first"))
    else:
        stats = storage.stats(now)
        checks += [_check_worker(stats, app.config), *_check_events(stats),
                   _check_rejections(storage.rejections_by_reason(now - 24 * 3600))]
    checks += _check_vonage_side(app, base_url, api_base, rest_base)

    for check in checks:
        fix = f"  Fix: {check.fix}" if check.fix and check.level in ("WARN", "FAIL") else ""
        click.echo(f"{check.level:<4}  {check.name:<22} {check.message}{fix}")
    failed = sum(check.level == "FAIL" for check in checks)
    if failed:
        raise click.ClickException(f"{failed} check{'s' if failed > 1 else ''} failed")


def _check_secret(app: Flask) -> Check:
    config, name = app.config, "signature secret"
    mode, method = config["SIGNATURE_VERIFICATION"], config["VONAGE_SIGNATURE_METHOD"]
    if mode == "off":
        return Check("FAIL", name, "SIGNATURE_VERIFICATION=off: anyone can forge callbacks",
                     "set SIGNATURE_VERIFICATION=on")
    if not (config.get("VONAGE_SIGNATURE_SECRET") or config.get("VONAGE_SIGNATURE_SECRETS")):
        return Check("WARN", name, f"the generated development secret ({_dev_secret_path(app)}): "
                     "Vonage's own callbacks will be refused",
                     "set VONAGE_SIGNATURE_SECRET to the signature secret in the Vonage dashboard (API settings)")
    api_key = config.get("VONAGE_API_KEY") or SAMPLE_API_KEY
    secrets = get_guard(app).keyring.secrets_for(api_key)
    if not secrets:
        return Check("FAIL", name, f"no secret for api key {api_key}",
                     "add it to VONAGE_SIGNATURE_SECRETS, or set VONAGE_SIGNATURE_SECRET")
    if any(len(s) < MIN_SECRET_LENGTH or s.lower() in EXAMPLE_SECRETS for s in secrets):
        return Check("FAIL", name, f"shorter than {MIN_SECRET_LENGTH} characters or an example value",
                     "copy the signature secret from the Vonage dashboard (API settings)")
    if mode == "jwt-only":
        return Check("WARN", name, "SIGNATURE_VERIFICATION=jwt-only: SMS API callbacks are not verified",
                     "set SIGNATURE_VERIFICATION=on")
    if config["APP_ENV"] == "development":
        return Check("WARN", name, "APP_ENV=development", "set APP_ENV=production where Vonage calls this app")
    return Check("OK", name, f"set for api key {api_key}; SMS signature method {method}")


def _check_database(storage) -> Check:
    name, where = "database", storage.where()
    reason = storage.unreachable_reason()
    if reason:
        return Check("FAIL", name, f"{where} does not answer ({reason})", "check DATABASE_URL and that the database is up")
    current, head = storage.revisions()
    if current != head:
        return Check("FAIL", name, f"{where} is at schema revision {current}, this code needs {head}",
                     "run `flask --app app init-db`")
    missing = storage.missing_tables()
    if missing:
        return Check("FAIL", name, f"{where} lacks tables {', '.join(missing)}", "run `flask --app app init-db`")
    return Check("OK", name, f"{where} answers; all tables present")


def _check_worker(stats, config) -> Check:
    if config["WORKER_IN_WEB"]:
        where, fix = "WORKER_IN_WEB=on: each web process runs one", "start the web app; its log says why one stopped"
    else:
        where, fix = "WORKER_IN_WEB=off: `flask worker` must run", "run `flask --app app worker` (Procfile: worker)"
    if not stats.live_workers:
        return Check("FAIL", "worker", f"no heartbeat in the last {ALIVE_SECONDS:g} s ({where})", fix)
    return Check("OK", "worker", f"{stats.live_workers} alive, last heartbeat {stats.last_heartbeat_seconds:.0f} s ago "
                 f"({where})")


def _check_events(stats) -> list[Check]:
    counts = stats.by_state
    backlog = f"{counts['pending']} pending, {counts['failed']} waiting to retry, {counts['processing']} processing"
    if stats.stalled:
        queue = Check("FAIL", "backlog", f"{backlog}; stalled: the oldest pending has waited "
                      f"{stats.oldest_due_seconds:.0f} s and no worker finished an event in that time",
                      "is a worker running? its log says why it stopped; `flask --app app worker` runs one")
    elif stats.stuck:
        queue = Check("WARN", "backlog", f"{backlog}; {stats.stuck} held by a worker that is gone or whose lease "
                      "ran out", "a live worker takes them back within seconds: is one running?")
    elif stats.oldest_due_seconds > PENDING_WARN_SECONDS:
        queue = Check("WARN", "backlog", f"{backlog}; the oldest pending has waited {stats.oldest_due_seconds:.0f} s",
                      "is the worker running and keeping up? `flask events list --state pending`")
    else:
        queue = Check("OK", "backlog", f"{backlog}; oldest pending {stats.oldest_due_seconds:.0f} s")
    dead, invalid = counts["dead"], counts["invalid"]
    if dead:
        settled = Check("FAIL", "dead events", f"{dead} dead (a handler raised on every attempt), {invalid} invalid",
                        "`flask events list --state dead`, fix the handler, then `flask events replay ID`")
    elif invalid:
        settled = Check("WARN", "dead events", f"none dead, {invalid} invalid (did not fit schemas/)",
                        "`flask events list --state invalid`; adjust schemas/, then `flask events replay ID`")
    else:
        settled = Check("OK", "dead events", "none dead, none invalid")
    return [queue, settled]


def _check_rejections(by_reason: dict[str, int]) -> Check:
    if not by_reason:
        return Check("OK", "rejections", "no callback refused in the last 24 h")
    total = sum(by_reason.values())
    summary = ", ".join(f"{reason} {count}" for reason, count in sorted(by_reason.items(), key=lambda kv: -kv[1]))
    bad = by_reason.get("bad_signature", 0) + by_reason.get("bad_sig", 0)
    if bad >= BAD_SIGNATURE_BURST:
        return Check("FAIL", "rejections", f"{total} refused in 24 h ({summary}): that many bad signatures "
                     "usually means VONAGE_SIGNATURE_SECRET is not the secret Vonage signs with",
                     "copy the signature secret (and for SMS the signature method) from the Vonage dashboard; "
                     "`flask events rejected` lists them")
    return Check("WARN", "rejections", f"{total} refused in 24 h ({summary})", "`flask events rejected` lists them")


def _check_vonage_side(app: Flask, base_url: str | None, api_base, rest_base) -> list[Check]:
    if not base_url:
        return [Check("SKIP", "Vonage side", "not checked: pass --base-url https://<public host>")]
    try:
        webhook_urls(base_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--base-url") from None
    checks = [_check_application(app, base_url, api_base, rest_base)]
    try:
        signing = _signing(app)
    except click.ClickException as exc:
        return checks + [Check("FAIL", "round trip", exc.message, "set VONAGE_SIGNATURE_SECRET")]
    status = samples.message_status("delivered", client_ref="vonage-doctor")
    inbound = samples.inbound_message(text="vonage doctor: signed round trip")
    return checks + [_check_round_trip("message-status", status, base_url, signing),
                     _check_round_trip("inbound-message", inbound, base_url, signing)]


def _check_application(app: Flask, base_url: str, api_base, rest_base) -> Check:
    name, app_id = "application", app.config.get("VONAGE_APPLICATION_ID")
    if not (app.config.get("VONAGE_API_KEY") and app.config.get("VONAGE_API_SECRET") and app_id):
        return Check("SKIP", name, "not checked: needs VONAGE_API_KEY, VONAGE_API_SECRET and VONAGE_APPLICATION_ID")
    try:
        application = _vonage_client(app, api_base, rest_base).get_application(app_id)
    except VonageAPIError as exc:
        return Check("FAIL", name, str(exc))
    messages = (application.get("capabilities") or {}).get("messages") or {}
    hooks, expected = messages.get("webhooks") or {}, webhook_urls(base_url)
    wrong = [f"{field} is {(hooks.get(field) or {}).get('address') or 'not set'}"
             for field in ("inbound_url", "status_url") if (hooks.get(field) or {}).get("address") != expected[field]]
    if wrong:
        return Check("FAIL", name, f"{app_id}: {'; '.join(wrong)}, not under {base_url}",
                     f"run `flask vonage configure --base-url {base_url}`")
    return Check("OK", name, f"{app_id} sends Messages webhooks ({messages.get('version', 'version not set')}) "
                 f"to {base_url}")


def _check_round_trip(kind: str, payload: dict, base_url: str, signing: dict) -> Check:
    name = f"public {kind}"
    try:
        sent = send_signed(kind, payload, base_url, **signing)
    except requests.RequestException as exc:
        return Check("FAIL", name, f"no answer from {webhook_urls(base_url)[URL_FIELDS[kind]]} "
                     f"within Vonage's limits ({exc.__class__.__name__})",
                     "check DNS, TLS, firewall, and that the app is deployed and listening")
    took, outcome = f"{sent.seconds * 1000:.0f} ms", f"{sent.status} {sent.error}".strip()
    if not sent.ok:
        mismatch = sent.error in ("bad_signature", "bad_sig", "unknown_api_key")
        fix = ("the deployment checks another signature secret or api key than this configuration" if mismatch
               else "read the deployment's log for this request")
        return Check("FAIL", name, f"answered a signed sample with {outcome} in {took}", fix)
    if sent.seconds > SLOW_ANSWER_SECONDS:
        return Check("WARN", name, f"answered {sent.status} but took {took}",
                     "Vonage retries after 15 s: check the database latency and the web process count")
    return Check("OK", name, f"answered a signed sample with {sent.status} in {took}")


def init_app(app: Flask) -> None:
    """Add `flask vonage ...` and `flask events resend`."""
    app.cli.add_command(vonage_cli)
    events_cli.add_command(resend_command)
