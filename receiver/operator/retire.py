"""When an application's webhooks may be removed, and `flask vonage retire` that removes them.

Vonage queues callbacks per account and retries each for up to 24 hours: removing an application's
webhook URLs (or deleting it) while callbacks are still on their way loses them. The rule is one
line: no callback for 24 hours first. The console's queue health page shows the same verdict.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import click
from flask import current_app
from flask.cli import with_appcontext

from receiver.operator.applications import VonageAPIError, VonageClient, diff_application, writable_copy
from receiver.operator.traffic import KEEP_DAYS
from receiver.platform.formats import iso
from receiver.storage import get_storage

QUIET_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Verdict:
    """Whether a sender (application or API key) is quiet enough to retire, from its last callback."""

    last_at: float | None  # the last callback this receiver answered for it (None: none in KEEP_DAYS)
    now: float

    @property
    def safe(self) -> bool:
        return self.last_at is None or self.now - self.last_at >= QUIET_SECONDS

    @property
    def safe_from(self) -> float | None:
        return None if self.last_at is None else self.last_at + QUIET_SECONDS


def application_verdict(storage, application_id: str, now: float | None = None) -> Verdict:
    """The verdict for one application, from the traffic this receiver counted (kept KEEP_DAYS)."""
    now = time.time() if now is None else now
    last = [row["last_at"] for row in storage.reads.senders(now - KEEP_DAYS * 86400)
            if row["application_id"] == application_id]
    return Verdict(max(last) if last else None, now)


def without_webhooks(application: dict) -> dict:
    """The PUT body: `application` with its Messages inbound and status URLs emptied, all else kept."""
    body = writable_copy(application)
    hooks = (((body.get("capabilities") or {}).get("messages") or {}).get("webhooks") or {})
    for name in ("inbound_url", "status_url"):
        if isinstance(hooks.get(name), dict):
            hooks[name]["address"] = ""
    return body


@click.command("retire")
@click.option("--application-id", required=True, help="The Vonage application whose Messages webhooks to remove.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--yes", is_flag=True, help="Change it without asking (after showing what changes).")
@click.option("--trust-this-database", is_flag=True,
              help="Retire although this database has counted callbacks for less than 24 hours.")
@click.option("--api-base", hidden=True, help="Applications API base URL.  [default: VONAGE_API_BASE]")
@with_appcontext
def retire_command(application_id: str, dry_run: bool, yes: bool, trust_this_database: bool,
                   api_base: str | None) -> None:
    """Clear an application's Messages webhook URLs, once no callback for it arrived for 24 hours."""
    storage = get_storage(current_app)
    verdict = application_verdict(storage, application_id)
    if not verdict.safe:
        hours = (verdict.now - verdict.last_at) / 3600
        raise click.ClickException(
            f"application {application_id}: its last callback arrived at {iso(verdict.last_at, 'seconds')} "
            f"({hours:.1f} h ago); safe to retire from {iso(verdict.safe_from, 'seconds')} if none arrives before")
    key, secret = current_app.config.get("VONAGE_API_KEY"), current_app.config.get("VONAGE_API_SECRET")
    if not key or not secret:
        raise click.ClickException("VONAGE_API_KEY and VONAGE_API_SECRET must be set (Vonage dashboard -> API settings)")
    client = VonageClient(key, secret, api_base=api_base or current_app.config["VONAGE_API_BASE"])
    try:
        current = client.get_application(application_id)
        planned = without_webhooks(current)
        diff = diff_application(writable_copy(current), planned)
        quiet = (f"last callback {iso(verdict.last_at, 'seconds')}" if verdict.last_at
                 else f"no callback in the last {KEEP_DAYS} days")
        if not diff:
            click.echo(f"application {application_id}: no Messages webhook URLs to clear ({quiet})")
            return
        click.echo(diff, nl=False)
        if dry_run:
            click.echo(f"dry run: application {application_id} not changed ({quiet})")
            return
        if verdict.last_at is None and not trust_this_database:
            _refuse_a_fresh_database(storage, application_id, verdict.now)
        if not yes:
            click.confirm(f"Clear the Messages webhook URLs of the live application {application_id}?", abort=True)
        client.put_application(application_id, planned)
        click.echo(f"application {application_id}: Messages webhook URLs cleared ({quiet})")
    except VonageAPIError as exc:
        raise click.ClickException(str(exc)) from None


def _refuse_a_fresh_database(storage, application_id: str, now: float) -> None:
    """"No callback" means something only from a database that has been counting for 24 hours: a new
    deployment's, or one whose traffic was pruned, has seen nothing because it has not been looking."""
    minutes = [row["minute"] for row in storage.stats.traffic_since(now - KEEP_DAYS * 86400)]
    since = min(minutes) * 60 if minutes else None
    if since is None or now - since < QUIET_SECONDS:
        counted = f"since {iso(since, 'seconds')}" if since is not None else "no callback at all"
        raise click.ClickException(
            f"application {application_id}: this database has counted {counted}, less than 24 hours, so it cannot "
            "tell whether callbacks are still on their way (a new deployment?): pass --trust-this-database if "
            "another receiver has seen none for 24 hours")
