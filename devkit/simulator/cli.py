"""`flask vonage simulator`: run the local Vonage of devkit.simulator in the foreground until Ctrl-C.

Each setting comes from its option, else from the Flask app's config when run inside the Flask CLI. The app
registers `simulator_command` itself; nothing here runs at import.
"""
from __future__ import annotations

import json
import os

import click
from flask import current_app, has_app_context
from flask.cli import ScriptInfo

from devkit.simulator.vonage import DEFAULT_API_KEY, DEFAULT_API_SECRET, running_simulator
from receiver.sending.keys import load_private_key, public_key_pem


def simulator_settings(config, *, signature_secret=None, api_key=None, api_secret=None, application_id=None,
                       private_key_path=None, app_secrets=None) -> dict:
    """The Simulator's credentials from the options given, else from `config` (a Flask app's config or {}).

    `app_secrets(api_key)` lists the secrets the app verifies with, for when VONAGE_SIGNATURE_SECRET is not
    set (development's generated secret, VONAGE_SIGNATURE_SECRETS).

    :raises click.UsageError: a private key that does not load, or no signature secret at all.
    """
    api_key = api_key or config.get("VONAGE_API_KEY") or DEFAULT_API_KEY
    configured = (config.get("VONAGE_SIGNATURE_SECRET") or "").split(",")[0].strip()
    secret = signature_secret or configured or next(iter(app_secrets(api_key) if app_secrets else []), None)
    if not secret:
        raise click.UsageError("no signature secret to sign callbacks with: pass --signature-secret or set "
                               "VONAGE_SIGNATURE_SECRET to the receiver's")
    application_id = application_id or config.get("VONAGE_APPLICATION_ID") or None
    public_key = None
    if private_key_path or config.get("VONAGE_PRIVATE_KEY") or config.get("VONAGE_PRIVATE_KEY_PATH"):
        try:
            if private_key_path:
                pem = load_private_key(path=private_key_path)
            else:
                pem = load_private_key(config.get("VONAGE_PRIVATE_KEY"), config.get("VONAGE_PRIVATE_KEY_PATH"))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if not application_id:
            raise click.UsageError("a private key needs its application: pass --application-id or set "
                                   "VONAGE_APPLICATION_ID")
        public_key = public_key_pem(pem)
    return {
        "signature_secret": secret,
        "api_key": api_key,
        "api_secret": api_secret or config.get("VONAGE_API_SECRET") or DEFAULT_API_SECRET,
        "application_id": application_id,
        "public_key": public_key,
    }


@click.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, type=click.Choice(["127.0.0.1", "::1", "localhost"]),
              help="Loopback interface to listen on: the simulator signs callbacks with your secret, so it is "
                   "never offered to the network.")
@click.option("--port", default=3001, show_default=True, type=click.IntRange(0, 65535))
@click.option("--receiver-url", help="Where callbacks go.  [default: http://127.0.0.1:$PORT, PORT defaulting to 3000]")
@click.option("--reject-share", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Share of messages rejected or undeliverable.")
@click.option("--duplicate-share", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Share of callbacks sent twice.")
@click.option("--out-of-order-share", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Share of messages whose statuses arrive out of order.")
@click.option("--auto-reply", metavar="TEXT", help="Reply with TEXT after each delivered message.")
@click.option("--delay-ms", default=300, show_default=True, type=click.IntRange(min=0),
              help="Between one callback of a message and the next.")
@click.option("--seed", type=int, help="Repeat the same rejections, duplicates and reorderings.")
@click.option("--signature-secret", help="[default: VONAGE_SIGNATURE_SECRET, the first if several]")
@click.option("--api-key", help=f"[default: VONAGE_API_KEY, else {DEFAULT_API_KEY}]")
@click.option("--api-secret", help="For Basic auth.  [default: VONAGE_API_SECRET]")
@click.option("--application-id", help="Whose JWTs are let in.  [default: VONAGE_APPLICATION_ID]")
@click.option("--private-key-path", help="[default: VONAGE_PRIVATE_KEY or VONAGE_PRIVATE_KEY_PATH]")
def simulator_command(host, port, receiver_url, reject_share, duplicate_share, out_of_order_share, auto_reply,
                      delay_ms, seed, signature_secret, api_key, api_secret, application_id, private_key_path):
    """Run a local Vonage: Messages API sends, signed callbacks to this receiver, inbound replies."""
    app = _flask_app()
    settings = simulator_settings(
        app.config if app is not None else {}, signature_secret=signature_secret, api_key=api_key,
        api_secret=api_secret, application_id=application_id, private_key_path=private_key_path,
        app_secrets=_app_secrets(app),
    )
    receiver_url = receiver_url or f"http://127.0.0.1:{os.environ.get('PORT', '3000')}"
    with running_simulator(development_applications(settings.get("application_id"), receiver_url),
                           host=host, port=port, receiver_url=receiver_url, reject_share=reject_share,
                           duplicate_share=duplicate_share, out_of_order_share=out_of_order_share,
                           auto_reply_text=auto_reply, callback_delay=delay_ms / 1000, seed=seed,
                           on_event=click.echo, **settings) as simulator:
        _print_banner(simulator, settings)
        try:
            simulator.stopping.wait()  # until Ctrl-C
        except KeyboardInterrupt:
            click.echo("stopping")


def development_applications(application_id: str | None, receiver_url: str) -> dict:
    """The application the simulator holds at start: the one the app sends as (VONAGE_APPLICATION_ID), its
    Messages webhooks at `receiver_url`, so `flask vonage configure` and `retire` can be tried against it."""
    if not application_id:
        return {}
    hooks = {name: {"address": f"{receiver_url}/webhooks/{path}", "http_method": "POST"}
             for name, path in (("inbound_url", "inbound-message"), ("status_url", "message-status"))}
    return {application_id: {"id": application_id, "name": "development",
                             "capabilities": {"messages": {"version": "v1", "webhooks": hooks}}}}


def _print_banner(simulator, settings):
    jwt_note = (f"the JWT of application {settings['application_id']}" if settings["public_key"]
                else "no JWT (no private key configured)")
    basic_note = f"api key {settings['api_key']}" + (
        f" with secret {DEFAULT_API_SECRET}" if settings["api_secret"] == DEFAULT_API_SECRET else " and its secret")
    sample = json.dumps({"from": "447700900123", "to": "447700900456", "channel": "sms", "text": "Hi"})
    click.echo(f"Vonage simulator on {simulator.url} (Ctrl-C to stop)")
    click.echo(f"  Messages API: POST {simulator.url}/v1/messages, with {jwt_note} or Basic auth ({basic_note})")
    click.echo(f"  callbacks to {simulator.receiver_url}/webhooks/..., signed for api key {settings['api_key']}")
    click.echo(f"  an inbound message: curl -X POST {simulator.url}/_simulator/inbound "
               f"-H 'Content-Type: application/json' -H 'X-Vonage-Simulator: 1' -d '{sample}'")


def _flask_app():
    """The Flask app this command runs in, if any: inside `flask ...` it has an app context or a ScriptInfo."""
    if has_app_context():
        return current_app._get_current_object()
    info = click.get_current_context().find_object(ScriptInfo)
    return info.load_app() if info is not None else None


def _app_secrets(app):
    guard = app.extensions.get("guard") if app is not None else None
    return guard.keyring.secrets_for if guard is not None else None
