"""`flask vonage send`: queue one message in the outbox, and with --wait follow it until it is sent or failed."""
from __future__ import annotations

import time

import click
from flask import current_app
from flask.cli import with_appcontext

from receiver.sending.bodies import CHANNELS, InvalidMessage, build_message
from receiver.sending.delivery import NOT_CONFIGURED
from receiver.storage import OptedOut, get_storage


@click.command("send")
@click.option("--to", required=True, help="The recipient: a number without +, or the channel's user id.")
@click.option("--from", "from_", required=True, help="Your number, sender id, page, service or agent id.")
@click.option("--channel", required=True, type=click.Choice(CHANNELS))
@click.option("--text", help="The text (message type text).")
@click.option("--type", "message_type", default="text", show_default=True, help="The message type.")
@click.option("--url", help="The media URL, for image, audio, video, file, vcard and sticker.")
@click.option("--client-ref", help="Your reference, echoed in every status callback (a unique one is made if not).")
@click.option("--wait", is_flag=True, help="Wait until it is sent (print its message_uuid) or failed (exit 1).")
@click.option("--timeout", default=60.0, show_default=True, help="How long --wait waits, in seconds.")
@with_appcontext
def send_command(to, from_, channel, text, message_type, url, client_ref, wait, timeout):
    """Queue one message through the Messages API; the worker sends it."""
    if not current_app.extensions["sending_configured"]:
        raise click.UsageError(NOT_CONFIGURED)
    try:
        body = build_message(channel, message_type, to=to, from_=from_, text=text, url=url, client_ref=client_ref)
    except InvalidMessage as exc:
        raise click.UsageError(str(exc)) from None
    storage = get_storage(current_app)
    try:
        message_id = storage.outbox.queue(body)
    except OptedOut as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"queued {message_id}")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = storage.outbox.get(message_id)
        if found["state"] == "sent":
            click.echo(f"sent {found['message_uuid']}")
            return
        if found["state"] == "failed":
            raise click.ClickException(f"outbox {message_id} failed: {found['last_error']}")
        time.sleep(0.2)
    raise click.ClickException(f"outbox {message_id} is still {found['state']} after {timeout:g} s "
                               "(is a worker running? `flask --app app worker`)")
