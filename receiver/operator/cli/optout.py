"""`flask vonage optout list|add|remove`: the suppression list; `flask vonage release ID`: send a held message."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from receiver.storage import get_storage

optout_cli = AppGroup("optout", help="The numbers nothing is sent to (they texted STOP, or Vonage said they opted out).")


@optout_cli.command("list")
def list_command():
    """The suppressed numbers, newest first."""
    found = get_storage(current_app).outbox.suppressed()
    for entry in found:
        click.echo(f"{entry['number']}\t{entry['created_at']}\t{entry['source']}\t{entry['reason']}")
    if not found:
        click.echo("no number has opted out")


@optout_cli.command("add")
@click.argument("number")
@click.option("--reason", default="added by an operator", show_default=True)
def add_command(number, reason):
    """Suppress NUMBER on every channel (as if it had texted STOP)."""
    added = get_storage(current_app).outbox.suppress(number, reason)
    click.echo(f"{number} suppressed" if added else f"{number} was already suppressed")


@optout_cli.command("remove")
@click.argument("number")
def remove_command(number):
    """Lift NUMBER's suppression (as if it had texted START): messages to it are sent again."""
    if not get_storage(current_app).outbox.lift(number):
        raise click.ClickException(f"{number} is not on the suppression list")
    click.echo(f"{number} may be sent to again")


@click.command("release")
@click.argument("message_id", type=int)
@with_appcontext
def release_command(message_id):
    """Send a held outbox message after all (its loop guard is passed over; a suppressed number still gets nothing)."""
    storage = get_storage(current_app)
    found = storage.outbox.get(message_id)
    if found is None:
        raise click.ClickException(f"no outbox message {message_id}")
    if not storage.outbox.release(message_id):
        raise click.ClickException(f"outbox {message_id} is {found['state']}: only a held message can be released")
    click.echo(f"released {message_id}: queued to send")
