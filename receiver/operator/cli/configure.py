"""`flask vonage configure`: point a Vonage application (and the account's SMS URLs) at this deployment."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from receiver.operator.applications import VonageAPIError, configure_application, configure_sms, webhook_urls
from receiver.operator.cli import common


@click.command("configure")
@click.option("--base-url", required=True, help="Public URL of this deployment, e.g. https://hooks.example.com")
@click.option("--application-id", help="The Vonage application to point here (default VONAGE_APPLICATION_ID).")
@click.option("--sms", is_flag=True, help="Also set the account's SMS API inbound and delivery-receipt URLs.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@common.vonage_api_options
@with_appcontext
def configure_command(base_url, application_id, sms, dry_run, api_base, rest_base):
    """Point a Vonage application's Messages webhooks (and with --sms the SMS API URLs) at --base-url."""
    client = common.vonage_client(current_app, api_base, rest_base)
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
