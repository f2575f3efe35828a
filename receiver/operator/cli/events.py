"""`flask events ...`: the command-line twins of the operator API (list, show, replay, prune, rejected,
resend)."""
from __future__ import annotations

import json

import click
import requests
from flask import current_app
from flask.cli import with_appcontext

from receiver.operator.cli import common
from receiver.operator.signed import replayable, send_signed
from receiver.storage import get_storage
from receiver.webhooks.payloads import DuplicateParameter


@click.command("list")
@click.option("--kind", type=click.Choice(["message-status", "inbound-message", "inbound-sms", "delivery-receipt"]))
@click.option("--state", type=click.Choice(["pending", "processing", "done", "failed", "dead", "invalid"]))
@click.option("--message-id")
@click.option("--limit", default=20, show_default=True)
@with_appcontext
def list_command(kind, state, message_id, limit) -> None:
    """Newest stored callbacks first."""
    found = get_storage(current_app).reads.events(kind=kind, state=state, message_id=message_id, limit=limit)
    click.echo(f"{'ID':>6}  {'KIND':16} {'STATE':10} {'STATUS':13} {'DLV':>3} {'ATT':>3}  MESSAGE ID")
    for e in found:
        click.echo(f"{e['id']:>6}  {e['kind']:16} {e['state']:10} {(e['status'] or '-'):13} {e['deliveries']:>3} "
                   f"{e['attempts']:>3}  {e['message_id'] or '-'}")


@click.command("show")
@click.argument("event_id", type=int)
@with_appcontext
def show_command(event_id: int) -> None:
    """Everything stored for one callback, as JSON."""
    found = get_storage(current_app).reads.event(event_id)
    if found is None:
        raise click.ClickException(f"no event {event_id}")
    click.echo(json.dumps(found, indent=2))


@click.command("replay")
@click.argument("event_id", type=int)
@with_appcontext
def replay_command(event_id: int) -> None:
    """Put a done, failed, dead or invalid event back in the queue."""
    if not get_storage(current_app).inbox.replay([event_id]):
        raise click.ClickException(f"event {event_id} does not exist or is pending/processing")
    click.echo(f"event {event_id} is pending again")


@click.command("prune")
@click.option("--older-than", "older_than", required=True, help="Age such as 30d, 12h or 90m.")
@with_appcontext
def prune_command(older_than: str) -> None:
    """Delete finished (done, invalid) events older than the given age. Pending, failed and dead ones stay."""
    try:
        seconds = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    deleted = get_storage(current_app).inbox.prune(seconds)
    click.echo(f"deleted {deleted['events']} events and {deleted['rejections']} rejections older than {older_than}")


@click.command("rejected")
@click.option("--limit", default=20, show_default=True)
@with_appcontext
def rejected_command(limit: int) -> None:
    """Recent requests refused by signature verification, newest first."""
    rows = get_storage(current_app).reads.rejections(limit=limit)
    if not rows:
        click.echo("no rejected requests")
    for r in rows:
        click.echo(f"{r['at']}  {r['count']:>5}x {r['reason']:22} {r['path']:28} {r['remote_addr'] or '-':15} "
                   f"{r['detail'] or ''}")


def parse_age(text: str) -> float:
    """Seconds in "30d", "12h", "90m" or "3600s" (a bare number is seconds).

    :raises ValueError: for anything else.
    """
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    text = text.strip().lower()
    unit = units.get(text[-1:]) if text[-1:].isalpha() else 1
    number = text[:-1] if text[-1:].isalpha() else text
    if unit is None or not number.replace(".", "", 1).isdigit():
        raise ValueError(f"{text!r} is not an age like 30d, 12h, 90m or 3600s")
    return float(number) * unit


@click.command("resend")
@click.argument("event_id", type=int)
@click.option("--to", "base_url", required=True, help="Base URL of the other deployment, e.g. https://staging.example")
@with_appcontext
def resend_command(event_id: int, base_url: str) -> None:
    """Send a stored callback to another deployment, freshly signed, the way it first arrived."""
    row = get_storage(current_app).reads.stored(event_id)
    if row is None:
        raise click.ClickException(f"no event {event_id}")
    try:
        stored = replayable(row)
    except DuplicateParameter as exc:
        raise click.ClickException(f"event {event_id} has a parameter twice ({exc}): not resent") from None
    signing = common.signing(current_app, stored.api_key)
    signing["application_id"] = stored.application_id or signing["application_id"]
    try:
        sent = send_signed(row.kind, stored.payload, base_url, via=stored.via, **signing)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    except requests.RequestException as exc:
        raise click.ClickException(f"no answer from {base_url}: {exc.__class__.__name__}") from None
    outcome = f"{sent.status} {sent.error}".strip()
    click.echo(f"{sent.request.method} {sent.request.url.split('?')[0]}  event {event_id} ({row.kind}"
               f"{', ' + row.status if row.status else ''})  {outcome}  {sent.seconds * 1000:.0f} ms")
    if not sent.ok:
        raise click.ClickException(f"event {event_id} was not accepted ({outcome})")
