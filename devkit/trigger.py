"""`flask vonage trigger`: realistic, correctly signed callbacks sent to a running receiver, as Vonage would."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import click
import requests
from flask import current_app
from flask.cli import with_appcontext

from devkit import samples
from receiver.kinds import KINDS
from receiver.operator.applications import MESSAGES_VERSIONS, webhook_urls
from receiver.operator.cli import common
from receiver.operator.signed import VIAS, VONAGE_TIMEOUT, curl_command, marked, send_signed
from receiver.platform.formats import iso


@dataclass
class Sample:
    kind: str
    payload: dict
    description: str
    via: str = "json"


def _status_callbacks(statuses, channels, version: str, fields: dict) -> list[Sample]:
    """Each status on each channel, every one for a message of its own."""
    return [
        Sample("message-status", _with_fields(samples.message_status(status, channel, version), fields),
                 f"{status} status ({channel}, {version})")
        for channel in channels for status in statuses
    ]


def _inbound_callbacks(types_by_channel: dict, version: str, fields: dict) -> list[Sample]:
    """One inbound message of each type named for each channel."""
    return [
        Sample("inbound-message", _with_fields(samples.inbound_message(channel, message_type, version), fields),
                 f"inbound {message_type} ({channel}, {version})")
        for channel, types in types_by_channel.items() for message_type in types
    ]


def _sms_callbacks(text: str | None, parts: int | None, via: str, fields: dict) -> list[Sample]:
    """One inbound SMS, or a multipart one whose parts arrive in scrambled order, as they can."""
    params = common.present({"msisdn": fields["from"], "to": fields["to"], "messageId": fields["message_uuid"]})
    if not parts:
        sms = samples.inbound_sms(text, **params) if text else samples.inbound_sms(**params)
        return [Sample("inbound-sms", sms, f"inbound SMS ({via})", via)]
    text = text or samples.inbound_sms()["text"]
    if parts > len(text):
        raise click.UsageError(f"--parts {parts} needs a text of at least {parts} characters")
    in_order = samples.inbound_sms_parts(text, parts, **params)
    order = list(range(parts))
    while order == sorted(order):
        random.shuffle(order)
    return [Sample("inbound-sms", in_order[i], f"inbound SMS part {i + 1}/{parts} ({via})", via) for i in order]


def _dlr_callbacks(status: str, via: str, fields: dict) -> list[Sample]:
    """One delivery receipt; in a receipt `msisdn` is the recipient of our SMS and `to` our sender ID."""
    params = common.present({"msisdn": fields["to"], "to": fields["from"], "messageId": fields["message_uuid"],
                       "client-ref": fields["client_ref"]})
    return [Sample("delivery-receipt", samples.delivery_receipt(status, **params), f"{status} receipt ({via})", via)]


def _conversation(channel: str, version: str, fields: dict) -> list[Sample]:
    """One outbound message's statuses as Vonage can really deliver them, then the customer's reply."""
    sent_at = datetime.now(timezone.utc) - timedelta(seconds=30)
    outbound = {name: fields[name] for name in ("to", "from", "message_uuid", "client_ref")}
    submitted = _with_fields(samples.message_status("submitted", channel, version), outbound)
    same = {name: submitted[name] for name in ("message_uuid", "to", "from", "client_ref")}

    def status(name: str, after: int) -> dict:
        moment = sent_at + timedelta(seconds=after)
        return samples.message_status(name, channel, version, **same, timestamp=iso(moment, "milliseconds"))

    submitted["timestamp"] = iso(sent_at, "milliseconds")
    delivered = status("delivered", 4)
    reply = samples.inbound_message(channel, "text", version, to=same["from"], **{"from": same["to"]})
    return [
        Sample("message-status", submitted, f"submitted ({channel}, {version})"),
        Sample("message-status", status("read", 20), "read"),
        Sample("message-status", delivered, "delivered, arriving after read (out of order)"),
        Sample("message-status", delivered, "delivered again (duplicate: a Vonage retry)"),
        Sample("inbound-message", _with_fields(reply, {"text": fields["text"]}), "inbound text reply"),
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


@click.command("trigger")
@click.argument("what", type=click.Choice(WHATS), default="conversation", required=False)
@click.option("--url", default=lambda: f"http://127.0.0.1:{os.environ.get('PORT') or 3000}",
              show_default="http://127.0.0.1:$PORT, PORT defaulting to 3000", help="Base URL of the receiver.")
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
@with_appcontext
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
    callbacks = [Sample(c.kind, marked(c.kind, c.payload, "trigger"), c.description, c.via)
                 for c in _trigger_callbacks(what, options)]
    signing = common.signing(current_app)
    if print_only:
        for callback in callbacks:
            click.echo(f"# {callback.description}")
            click.echo(curl_command(callback.kind, callback.payload, url, via=callback.via, **signing))
        return

    width = max(len(callback.description) for callback in callbacks)
    refused = []
    for callback in callbacks:
        path = urlsplit(webhook_urls(url)[KINDS[callback.kind].url_setting]).path
        try:
            sent = send_signed(callback.kind, callback.payload, url, via=callback.via, **signing)
        except requests.ConnectionError:
            raise click.ClickException(
                f"nothing answers at {url}: is the receiver running? Start it with `python3 dev.py serve` "
                "(on $PORT, default 3000) or point --url at it"
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


def _trigger_callbacks(what: str, options: dict) -> list[Sample]:
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
