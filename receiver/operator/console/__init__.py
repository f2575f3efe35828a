"""The operations console: server-rendered pages under /ui for the developer and the operator.

Feed, event, message, problems and queue health pages, behind ADMIN_TOKEN (404 without it). It
reads through Storage on connections of its own and never slows the acknowledgements.
"""
from flask import Flask

from receiver.operator.console import auth, present, views


def init_app(app: Flask) -> None:
    auth.init_app(app)
    app.jinja_env.finalize = present.printable
    app.register_blueprint(views.bp)
    app.add_url_rule("/", "console_root", views.root)
