"""The careful naive receiver, a reference: verify, INSERT and COMMIT, answer 200, all in the request.

What a careful user writes first: PyJWT and marshmallow for the Messages API, the `sig` for the SMS
API, one durable commit per request, no worker. `gunicorn -w 2 'naive:create_app()'` from bench/.
"""
import hashlib
import hmac
import os
import sqlite3
import threading
import time

import jwt
import psycopg
from flask import Flask, abort, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields

TABLE = ("CREATE TABLE IF NOT EXISTS callbacks (kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, "
         "received_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kind, key))")
INSERT = "INSERT INTO callbacks VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"


class Callback(Schema):
    class Meta:
        unknown = EXCLUDE

    message_uuid = fields.Str(required=True)
    status = fields.Str()
    channel = fields.Str()


def sms_signature(params: dict, secret: str, method: str) -> str:
    """Vonage's `sig`: the sorted parameters as &key=value (with & and = in values replaced by _)."""
    signed = "".join(f"&{k}={params[k].replace('&', '_').replace('=', '_')}" for k in sorted(params) if k != "sig")
    if method == "md5hash":
        return hashlib.md5((signed + secret).encode()).hexdigest()
    return hmac.new(secret.encode(), signed.encode(), method).hexdigest()


def create_app() -> Flask:
    app = Flask(__name__)
    url = os.environ.get("DATABASE_URL", "sqlite:///naive.sqlite3")
    secret, method = os.environ["VONAGE_SIGNATURE_SECRET"], os.environ.get("VONAGE_SIGNATURE_METHOD", "md5hash")
    window = int(os.environ.get("SMS_TIMESTAMP_WINDOW_SECONDS", "300"))
    postgres, local = url.startswith("postgres"), threading.local()  # neither driver shares a connection across threads

    def db():
        if not hasattr(local, "conn"):
            if postgres:
                local.conn = psycopg.connect(url, options="-c synchronous_commit=on")
            else:
                local.conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=5)
                local.conn.execute("PRAGMA journal_mode=WAL")
                local.conn.execute("PRAGMA synchronous=FULL")
        return local.conn

    def store(key: str, body: str):
        try:
            db().execute(INSERT.replace("?", "%s") if postgres else INSERT,
                         (request.path.rsplit("/", 1)[1], key, body, time.time()))
            local.conn.commit()
        except (sqlite3.Error, psycopg.Error):
            local.__dict__.pop("conn").close()  # the next request opens a fresh connection
            abort(503)
        return "", 200

    @app.post("/webhooks/message-status")
    @app.post("/webhooks/inbound-message")
    def messages_callback():
        body, token = request.get_data(), request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], issuer="Vonage", leeway=300,
                                options={"require": ["iat", "payload_hash", "api_key"]})
        except jwt.InvalidTokenError:
            abort(401)
        if not hmac.compare_digest(str(claims["payload_hash"]).encode(), hashlib.sha256(body).hexdigest().encode()):
            abort(401)
        try:
            payload = Callback().loads(body)
        except (ValidationError, ValueError):
            abort(400)
        return store(payload["message_uuid"] + ":" + payload.get("status", ""), body.decode())

    @app.route("/webhooks/inbound-sms", methods=["GET", "POST"])
    @app.route("/webhooks/delivery-receipt", methods=["GET", "POST"])
    def sms_callback():
        params = (request.args if request.method == "GET" else request.form).to_dict()
        expected, given = sms_signature(params, secret, method), params.get("sig", "").lower()
        signed = hmac.compare_digest(expected.encode(), given.encode())
        stamp = params.get("timestamp", "")
        if not signed or not stamp.isdigit() or abs(time.time() - int(stamp)) > window:
            abort(401)
        key = params.get("messageId", "") + ":" + params.get("status", "")
        return store(key, request.query_string.decode() or request.get_data(as_text=True))

    db().execute(TABLE)
    local.conn.commit()
    return app
