"""The reference: the bare Flask snippet users compare us against. It reads the callback and says 200.

No signature check, no storage, no worker: `gunicorn 'bare:create_app()'` with bench/ on the path.
"""
from flask import Flask, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/message-status")
    @app.post("/webhooks/inbound-message")
    def messages_callback():
        request.get_json()
        return "", 200

    @app.route("/webhooks/inbound-sms", methods=["GET", "POST"])
    @app.route("/webhooks/delivery-receipt", methods=["GET", "POST"])
    def sms_callback():
        request.get_json(silent=True) if request.is_json else request.values.to_dict()
        return "", 200

    return app
