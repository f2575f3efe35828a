"""The command line, registered in plain sight: `flask worker`, `flask init-db`, `flask events ...` and
`flask vonage ...`. One module per command or family; nothing here runs at import.

`flask vonage trigger` and `flask vonage simulator` are development tools (devkit/, outside the runtime):
they are imported only when run, so the app itself never loads them.
"""
from __future__ import annotations

import importlib

import click
from flask import Flask
from flask.cli import AppGroup

from receiver.operator import retire
from receiver.operator.cli import configure, doctor, events, optout, send, service

events_cli = AppGroup("events", help="Inspect, replay, resend and prune stored callbacks.")
for command in (events.list_command, events.show_command, events.replay_command, events.prune_command,
                events.rejected_command, events.resend_command):
    events_cli.add_command(command)


class _WithDevelopmentTools(AppGroup):
    """`flask vonage`: its own commands, and devkit's, loaded when one of those is asked for."""

    DEVELOPMENT = {"trigger": ("devkit.trigger", "trigger_command"),
                   "simulator": ("devkit.simulator.cli", "simulator_command")}

    def list_commands(self, ctx) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.DEVELOPMENT})

    def get_command(self, ctx, name: str) -> click.Command | None:
        if name in self.DEVELOPMENT:
            module, attribute = self.DEVELOPMENT[name]
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


vonage_cli = _WithDevelopmentTools("vonage", help="Send, simulate and configure Vonage; check a deployment.")
for command in (configure.configure_command, doctor.doctor_command, send.send_command, retire.retire_command,
                optout.optout_cli, optout.release_command):
    vonage_cli.add_command(command)


def init_app(app: Flask) -> None:
    app.cli.add_command(service.worker_command)
    app.cli.add_command(service.init_db_command)
    app.cli.add_command(events_cli)
    app.cli.add_command(vonage_cli)
