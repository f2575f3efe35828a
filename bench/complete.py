"""The complete synchronous receiver, a reference: the whole job this project does, inside the request.

What a careful user writes who wants the same result without a worker: verify (PyJWT and the payload
hash for the Messages API, the `sig` and its timestamp for the SMS API), validate with marshmallow,
store the callback once by its natural key, move the message's state forward only, append the status
to its history, call the handler the table names (one log line, as the project's shipped handlers
write), commit, then answer 200. One durable commit per request (SQLite WAL synchronous=FULL,
PostgreSQL synchronous_commit=on). `gunicorn 'complete:create_app()'` from bench/.
"""
import hashlib
import hmac
import logging
import os
import sqlite3
import sys
import threading
import time

import jwt
import psycopg
from flask import Flask, abort, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields

from naive import sms_signature

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS callbacks (kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, "
    "received_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kind, key))",
    "CREATE TABLE IF NOT EXISTS messages (message_id TEXT PRIMARY KEY, status TEXT, status_rank INTEGER NOT NULL, "
    "channel TEXT, updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history (message_id TEXT NOT NULL, status TEXT, timestamp TEXT, "
    "applied INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL)",
)
STORE = "INSERT INTO callbacks VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
# Forward only: a status replaces the message's only if it ranks higher.
MOVE = ("INSERT INTO messages VALUES (?, ?, ?, ?, ?) ON CONFLICT (message_id) DO UPDATE SET status = excluded.status,"
        " status_rank = excluded.status_rank, updated_at = excluded.updated_at"
        " WHERE excluded.status_rank > messages.status_rank")
APPEND = "INSERT INTO history VALUES (?, ?, ?, ?, ?)"
RECEIVED = "INSERT INTO messages VALUES (?, NULL, 0, ?, ?) ON CONFLICT (message_id) DO NOTHING"  # an inbound one
RANK = {"submitted": 1, "accepted": 1, "buffered": 2, "delivered": 3, "read": 4, "rejected": 5, "undeliverable": 5,
        "failed": 5, "expired": 5, "unknown": 0}

log = logging.getLogger("handlers")


class MessagesCallback(Schema):
    class Meta:
        unknown = EXCLUDE

    message_uuid = fields.Str(required=True)
    status = fields.Str()
    timestamp = fields.Str()
    channel = fields.Str()
    message_type = fields.Str()
    text = fields.Str()


class SmsCallback(Schema):
    class Meta:
        unknown = EXCLUDE

    messageId = fields.Str(required=True)
    status = fields.Str()
    msisdn = fields.Str()
    to = fields.Str()
    text = fields.Str()


def on_status(event: dict) -> None:
    log.info("status %s message_id=%s", event.get("status"), event.get("message_uuid") or event.get("messageId"))


def on_inbound(event: dict) -> None:
    log.info("inbound message_id=%s", event.get("message_uuid") or event.get("messageId"))


HANDLERS = {"message-status": on_status, "delivery-receipt": on_status, "inbound-message": on_inbound,
            "inbound-sms": on_inbound}
MESSAGES_SCHEMA, SMS_SCHEMA = MessagesCallback(), SmsCallback()


def create_app() -> Flask:
    app = Flask(__name__)
    logging.basicConfig(stream=sys.stdout, level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = os.environ.get("DATABASE_URL", "sqlite:///complete.sqlite3")
    secret, method = os.environ["VONAGE_SIGNATURE_SECRET"], os.environ.get("VONAGE_SIGNATURE_METHOD", "md5hash")
    window = int(os.environ.get("SMS_TIMESTAMP_WINDOW_SECONDS", "300"))
    postgres, local = url.startswith("postgres"), threading.local()

    def db():
        if not hasattr(local, "conn"):
            if postgres:
                local.conn = psycopg.connect(url, options="-c synchronous_commit=on")
            else:
                local.conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=5)
                local.conn.execute("PRAGMA journal_mode=WAL")
                local.conn.execute("PRAGMA synchronous=FULL")
        return local.conn

    def sql(statement: str) -> str:
        return statement.replace("?", "%s") if postgres else statement

    def process(kind: str, key: str, body: str, event: dict, message_id: str) -> tuple[str, int]:
        conn, now = db(), time.time()
        try:
            stored = conn.execute(sql(STORE), (kind, key, body, now)).rowcount
            if stored:  # a repeat of a stored callback is acknowledged and not processed again
                if kind in ("message-status", "delivery-receipt"):
                    status = event.get("status")
                    moved = conn.execute(sql(MOVE), (message_id, status, RANK.get(status, 0), event.get("channel"),
                                                     now)).rowcount
                    conn.execute(sql(APPEND), (message_id, status, event.get("timestamp"), int(bool(moved)), now))
                else:
                    conn.execute(sql(RECEIVED), (message_id, event.get("channel"), now))
                HANDLERS[kind](event)
            conn.commit()
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
            event = MESSAGES_SCHEMA.loads(body)
        except (ValidationError, ValueError):
            abort(400)
        kind = request.path.rsplit("/", 1)[1]
        key = "|".join((event["message_uuid"], event.get("status", ""), event.get("timestamp", "")))
        return process(kind, key, body.decode(), event, event["message_uuid"])

    @app.route("/webhooks/inbound-sms", methods=["GET", "POST"])
    @app.route("/webhooks/delivery-receipt", methods=["GET", "POST"])
    def sms_callback():
        params = (request.args if request.method == "GET" else request.form).to_dict()
        expected, given = sms_signature(params, secret, method), params.get("sig", "").lower()
        signed = hmac.compare_digest(expected.encode(), given.encode())
        stamp = params.get("timestamp", "")
        if not signed or not stamp.isdigit() or abs(time.time() - int(stamp)) > window:
            abort(401)
        try:
            event = SMS_SCHEMA.load(params)
        except ValidationError:
            abort(400)
        kind = request.path.rsplit("/", 1)[1]
        key = "|".join((event["messageId"], params.get("concat-part", ""), event.get("status", ""),
                        params.get("err-code", ""), params.get("message-timestamp", "")))
        return process(kind, key, request.query_string.decode() or request.get_data(as_text=True), event,
                       event["messageId"])

    for statement in SCHEMA:
        db().execute(statement)
    local.conn.commit()
    return app
