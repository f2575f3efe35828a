"""`flask vonage doctor`: what is wrong with this deployment, in one line per check, each with its fix."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import click
import requests
from flask import Flask, current_app
from flask.cli import with_appcontext

from receiver.kinds import KINDS
from receiver.operator import tokens
from receiver.operator.applications import VonageAPIError, webhook_urls
from receiver.operator.cli import common
from receiver.operator.signed import marked, send_signed
from receiver.sending.delivery import NOT_CONFIGURED, silent_deadlines
from receiver.storage import get_storage
from receiver.storage.stats import ALIVE_SECONDS
from receiver.webhooks.guard import get_guard, weakness

PENDING_WARN_SECONDS = 60
SLOW_ANSWER_SECONDS = 2.0  # Vonage allows 15 s; a receiver that stores and acknowledges needs far less
BAD_SIGNATURE_BURST = 5  # in 24 h: more than stray scanners, a sign that Vonage signs with another secret


@dataclass
class Check:
    level: str  # OK, WARN, FAIL or SKIP
    name: str
    message: str
    fix: str = ""


@click.command("doctor")
@click.option("--base-url", help="Public URL of this deployment: also check Vonage's settings and a signed round trip.")
@common.vonage_api_options
@with_appcontext
def doctor_command(base_url, api_base, rest_base):
    """Check secret, database, worker, backlog and rejections; with --base-url, the Vonage side too.

    With --base-url it sends one signed sample status (client_ref vonage-doctor) and one sample inbound
    message to that deployment, where they are stored and verified like any callback but never reach a handler.
    Exits 1 when any check FAILs.
    """
    app = current_app._get_current_object()
    storage = get_storage(app)
    now = time.time()
    checks = [_check_secret(app), _check_tokens(app.config), _check_database_file(app, storage), _check_database(storage)]
    if checks[-1].level == "FAIL":
        checks.append(Check("SKIP", "worker, events", "not checked: fix the database first"))
    else:
        stats = storage.stats.collect(now)
        checks += [_check_worker(stats, app.config), *_check_events(stats), _check_sending(app, storage),
                   _check_rejections(storage.reads.rejections_by_reason(now - 24 * 3600)),
                   _check_silent(storage.outbox.silent(silent_deadlines(app.config), limit=1))]
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
        return Check("WARN", name, f"the generated development secret ({common.dev_secret_path(app)}): "
                     "Vonage's own callbacks will be refused",
                     "set VONAGE_SIGNATURE_SECRET to the signature secret in the Vonage dashboard (API settings)")
    api_key = config.get("VONAGE_API_KEY") or common.SAMPLE_API_KEY
    secrets = get_guard(app).keyring.secrets_for(api_key)
    if not secrets:
        return Check("FAIL", name, f"no secret for api key {api_key}",
                     "add it to VONAGE_SIGNATURE_SECRETS, or set VONAGE_SIGNATURE_SECRET")
    problem = next(filter(None, map(weakness, secrets)), None)
    if problem:
        return Check("FAIL", name, f"the secret for api key {api_key} {problem}",
                     "copy the signature secret from the Vonage dashboard (API settings)")
    if mode == "jwt-only":
        return Check("WARN", name, "SIGNATURE_VERIFICATION=jwt-only: SMS API callbacks are not verified",
                     "set SIGNATURE_VERIFICATION=on")
    if config["APP_ENV"] == "development":
        return Check("WARN", name, "APP_ENV=development", "set APP_ENV=production where Vonage calls this app")
    return Check("OK", name, f"set for api key {api_key}; SMS signature method {method}")


def _check_tokens(config) -> Check:
    """ADMIN_TOKEN and METRICS_TOKEN by the rules production starts with (receiver.operator.tokens)."""
    found = tokens.problems(config)
    if found:
        level = "WARN" if config["APP_ENV"] == "development" else "FAIL"
        problem, _, fix = found[0].partition(": ")
        return Check(level, "operator tokens", problem + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""), fix)
    if not config.get("ADMIN_TOKEN"):
        return Check("OK", "operator tokens", "ADMIN_TOKEN unset: /api and the console answer 404")
    return Check("OK", "operator tokens", f"at least {tokens.MIN_LENGTH} characters, none of them another secret")


def _check_sending(app: Flask, storage) -> Check:
    """Without sending credentials, messages handlers queue (reply()) are never sent."""
    if app.extensions["sending_configured"]:
        return Check("OK", "sending", "configured")
    queued = len(storage.outbox.listed(state="queued", limit=1000))
    if queued:
        return Check("FAIL", "sending", f"{queued} message(s) queued that will never be sent", NOT_CONFIGURED)
    return Check("OK", "sending", "not configured: a handler's reply() would stay queued")


def _check_database_file(app: Flask, storage) -> Check:
    name = "database file"
    if storage.dialect != "sqlite":
        return Check("OK", name, f"{storage.dialect}: not a file on this machine")
    if os.environ.get("DYNO"):  # Heroku sets it on every dyno
        return Check("FAIL", name, "SQLite on a Heroku dyno, whose disk is wiped at every restart: the callbacks "
                     "it acknowledged go with it", "`heroku addons:create heroku-postgresql` (it sets DATABASE_URL)")
    if app.config["APP_ENV"] == "development":
        return Check("OK", name, f"SQLite at {storage.engine.url.database} (development)")
    return Check("WARN", name, f"SQLite at {storage.engine.url.database}: it must be on persistent storage, and only "
                 "this machine can use it", "fine on one server with a real disk; for a PaaS or several machines "
                 "set DATABASE_URL to PostgreSQL")


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


def _check_silent(found: tuple[int, list]) -> Check:
    count, oldest = found
    if not count:
        return Check("OK", "silent messages", "every sent message has a final status, or is within its deadline")
    return Check("WARN", "silent messages", f"{count} sent with no final status past SILENT_AFTER_SECONDS_* (the "
                 f"oldest, outbox {oldest[0]['id']}, {oldest[0]['silent_seconds'] / 3600:.0f} h)",
                 "are status callbacks reaching /webhooks/message-status? see the console's problems page")


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
        signing = common.signing(app)
    except click.ClickException as exc:
        return checks + [Check("FAIL", "round trip", exc.message, "set VONAGE_SIGNATURE_SECRET")]
    # Marked as the doctor's: stored and verified like any callback, never dispatched to a handler.
    from devkit import samples  # the sample payloads live with the development tools; only this check needs them

    status = marked("message-status", samples.message_status("delivered", client_ref="vonage-doctor"), "doctor")
    inbound = marked("inbound-message", samples.inbound_message(text="vonage doctor: signed round trip"), "doctor")
    return checks + [_check_round_trip("message-status", status, base_url, signing),
                     _check_round_trip("inbound-message", inbound, base_url, signing)]


def _check_application(app: Flask, base_url: str, api_base, rest_base) -> Check:
    name, app_id = "application", app.config.get("VONAGE_APPLICATION_ID")
    if not (app.config.get("VONAGE_API_KEY") and app.config.get("VONAGE_API_SECRET") and app_id):
        return Check("SKIP", name, "not checked: needs VONAGE_API_KEY, VONAGE_API_SECRET and VONAGE_APPLICATION_ID")
    try:
        application = common.vonage_client(app, api_base, rest_base).get_application(app_id)
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
        return Check("FAIL", name, f"no answer from {webhook_urls(base_url)[KINDS[kind].url_setting]} "
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
