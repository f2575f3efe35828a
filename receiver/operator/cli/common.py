"""What the `flask vonage` commands share: signing as this app verifies, and the Vonage API client."""
from __future__ import annotations

import os

import click
from flask import Flask

from receiver.operator.applications import VonageClient
from receiver.webhooks.guard import DEV_SECRET_FILE, get_guard

SAMPLE_API_KEY = "a1b2c3d4"  # the api key in devkit/samples.py, used when VONAGE_API_KEY is not set


def signing(app: Flask, api_key: str | None = None) -> dict:
    """The keyword arguments that sign as this app verifies: its current secret for the api key."""
    api_key = api_key or app.config.get("VONAGE_API_KEY") or SAMPLE_API_KEY
    secrets = get_guard(app).keyring.secrets_for(api_key)
    if not secrets:
        raise click.ClickException(
            f"no signature secret for api key {api_key}: set VONAGE_SIGNATURE_SECRET "
            f"(or run with APP_ENV=development to use the generated {dev_secret_path(app)})"
        )
    return {"secret": secrets[0], "api_key": api_key, "method": app.config["VONAGE_SIGNATURE_METHOD"],
            "application_id": app.config.get("VONAGE_APPLICATION_ID")}


def dev_secret_path(app: Flask) -> str:
    return os.path.join(app.instance_path, DEV_SECRET_FILE)


def vonage_api_options(command):
    # Hidden: tests point them at a local stand-in for Vonage; nobody else needs them.
    command = click.option("--api-base", hidden=True, help="Applications API base URL.")(command)
    return click.option("--rest-base", hidden=True, help="Account API base URL.")(command)


def vonage_client(app: Flask, api_base: str | None, rest_base: str | None) -> VonageClient:
    key, secret = app.config.get("VONAGE_API_KEY"), app.config.get("VONAGE_API_SECRET")
    if not key or not secret:
        raise click.ClickException(
            "VONAGE_API_KEY and VONAGE_API_SECRET must be set (Vonage dashboard -> API settings)"
        )
    api_base = api_base or app.config["VONAGE_API_BASE"]
    return VonageClient(key, secret, **present({"api_base": api_base, "rest_base": rest_base}))


def present(params: dict) -> dict:
    return {name: value for name, value in params.items() if value is not None}
