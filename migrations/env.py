"""Alembic's entry point: runs the migrations on the connection receiver.migrate hands over or, from
the `alembic` command line, on DATABASE_URL (the embedded SQLite file when it is unset).

Apply migrations with `flask --app app init-db` (it takes the lock, so processes starting together take turns);
use the `alembic` command for `revision --autogenerate`, `history` and `current`.
"""
from alembic import context

from receiver.platform import config
from receiver.storage import engines, schema


def run_on(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=schema.metadata,
        # SQLite cannot ALTER most things: autogenerate then writes batch (copy-and-move) operations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_command_line() -> None:
    settings = {**config.defaults(), **config.from_env()}
    url = engines.database_url(settings["DATABASE_URL"], settings["INSTANCE_PATH"])
    if context.is_offline_mode():  # `alembic upgrade head --sql`: print the SQL instead of running it
        context.configure(url=url, target_metadata=schema.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engines.make_engine(url)
    try:
        with engine.connect() as connection:
            run_on(connection)
    finally:
        engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    run_from_command_line()
