"""The command line, registered in plain sight: `flask worker`, `flask init-db`, `flask events ...` and
`flask vonage ...`. One module per command or family; nothing here runs at import."""
from __future__ import annotations

from flask import Flask
from flask.cli import AppGroup

from receiver import retire
from receiver.cli import configure, doctor, events, send, service, trigger
from receiver.simulator.cli import simulator_command

events_cli = AppGroup("events", help="Inspect, replay, resend and prune stored callbacks.")
for command in (events.list_command, events.show_command, events.replay_command, events.prune_command,
                events.rejected_command, events.resend_command):
    events_cli.add_command(command)

vonage_cli = AppGroup("vonage", help="Send, simulate and configure Vonage; check a deployment.")
for command in (trigger.trigger_command, configure.configure_command, doctor.doctor_command, send.send_command,
                retire.retire_command, simulator_command):
    vonage_cli.add_command(command)


def init_app(app: Flask) -> None:
    app.cli.add_command(service.worker_command)
    app.cli.add_command(service.init_db_command)
    app.cli.add_command(events_cli)
    app.cli.add_command(vonage_cli)
