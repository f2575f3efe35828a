"""`flask worker` and `flask init-db`: running the worker, and bringing the schema up to date."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from receiver.platform.config import ConfigError
from receiver.storage import StorageUnavailable, database_setting, get_storage, start_failure
from receiver.worker import supervisor


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
    try:
        storage.migrate()
    except StorageUnavailable as exc:
        # The release step: a database that cannot be reached or used stops the deploy, in one line.
        raise ConfigError(start_failure(storage, database_setting(current_app.config), exc.__cause__)) from None
    click.echo(f"database ready at revision {storage.revisions()[0]}")
