"""Command-line twins of the operator API: `flask worker`, `flask init-db`, `flask events ...`."""
from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from receiver import supervisor
from receiver.storage import get_storage


@click.command("worker")
@click.option("--until-idle", is_flag=True, help="Process what is due now, then exit.")
@with_appcontext
def worker_command(until_idle: bool) -> None:
    """Run the worker in this process (SIGTERM: finish the current event, then exit)."""
    if until_idle:
        click.echo(f"processed {supervisor.until_idle(current_app)} events")
        return
    supervisor.run_forever(current_app)


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Apply any pending schema migrations (the app also does this when it starts)."""
    storage = get_storage(current_app)
    storage.migrate()
    click.echo(f"database ready at revision {storage.revisions()[0]}")


events_cli = AppGroup("events", help="Inspect and replay stored callbacks.")


@events_cli.command("list")
@click.option("--kind", type=click.Choice(["message-status", "inbound-message", "inbound-sms", "delivery-receipt"]))
@click.option("--state", type=click.Choice(["pending", "processing", "done", "failed", "dead", "invalid"]))
@click.option("--message-id")
@click.option("--limit", default=20, show_default=True)
def list_command(kind, state, message_id, limit) -> None:
    """Newest stored callbacks first."""
    found = get_storage(current_app).events(kind=kind, state=state, message_id=message_id, limit=limit)
    click.echo(f"{'ID':>6}  {'KIND':16} {'STATE':10} {'STATUS':13} {'DLV':>3} {'ATT':>3}  MESSAGE ID")
    for e in found:
        click.echo(f"{e['id']:>6}  {e['kind']:16} {e['state']:10} {(e['status'] or '-'):13} {e['deliveries']:>3} "
                   f"{e['attempts']:>3}  {e['message_id'] or '-'}")


@events_cli.command("show")
@click.argument("event_id", type=int)
def show_command(event_id: int) -> None:
    """Everything stored for one callback, as JSON."""
    found = get_storage(current_app).event(event_id)
    if found is None:
        raise click.ClickException(f"no event {event_id}")
    click.echo(json.dumps(found, indent=2))


@events_cli.command("replay")
@click.argument("event_id", type=int)
def replay_command(event_id: int) -> None:
    """Put a done, failed, dead or invalid event back in the queue."""
    if not get_storage(current_app).replay(event_id):
        raise click.ClickException(f"event {event_id} does not exist or is pending/processing")
    click.echo(f"event {event_id} is pending again")


@events_cli.command("prune")
@click.option("--older-than", "older_than", required=True, help="Age such as 30d, 12h or 90m.")
def prune_command(older_than: str) -> None:
    """Delete finished (done, invalid) events older than the given age. Pending, failed and dead ones stay."""
    try:
        seconds = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    deleted = get_storage(current_app).prune(seconds)
    click.echo(f"deleted {deleted['events']} events and {deleted['rejections']} rejections older than {older_than}")


@events_cli.command("rejected")
@click.option("--limit", default=20, show_default=True)
def rejected_command(limit: int) -> None:
    """Recent requests refused by signature verification, newest first."""
    rows = get_storage(current_app).rejections(limit=limit)
    if not rows:
        click.echo("no rejected requests")
    for r in rows:
        click.echo(f"{r['at']}  {r['reason']:22} {r['path']:28} {r['remote_addr'] or '-':15} {r['detail'] or ''}")


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


def init_app(app: Flask) -> None:
    app.cli.add_command(worker_command)
    app.cli.add_command(init_db_command)
    app.cli.add_command(events_cli)
