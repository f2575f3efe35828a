"""The Flask application factory: wiring only, in order (config, logging, storage, security, routes, metrics, worker, CLI).

Run it with `flask --app app run` or `gunicorn 'app:create_app()'`. Nothing happens at import.
"""
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from receiver import operator, storage
from receiver.operator import api, cli, console, metrics, tokens
from receiver.platform import config, logs
from receiver.sending import delivery as sender
from receiver.webhooks import guard, routes
from receiver.worker import dispatch, supervisor


def create_app(test_config: dict | None = None) -> Flask:
    settings = {**config.defaults(), **config.from_env(), **(test_config or {})}
    config.refuse_ephemeral_database(settings)
    app = Flask(__name__, instance_path=settings["INSTANCE_PATH"], static_folder=None)
    app.config.update(settings)

    logs.init_app(app)
    hops = app.config["PROXY_FIX_HOPS"]
    if hops:
        # Trust exactly this many proxies (Heroku's router, nginx, a tunnel) for client address and scheme.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)

    dispatch.init_app(app)  # the handler tables are checked before the database is opened or migrated
    storage.init_app(app)
    guard.init_app(app)
    tokens.init_app(app)  # ADMIN_TOKEN and METRICS_TOKEN: long, varied, no other secret
    sender.init_app(app)
    routes.init_app(app)
    operator.init_app(app)  # URL converters the API and the console share
    api.init_app(app)
    console.init_app(app)
    metrics.init_app(app)
    supervisor.init_app(app)
    cli.init_app(app)
    return app
