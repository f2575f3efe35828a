"""The simulated Vonage: routes each request to the API it fakes and turns accepted messages into callbacks.

State is in memory and every request is recorded, for tests to read. Nothing starts until `start()`.
"""
from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from devkit.simulator.applications import ConfigurationAPI
from devkit.simulator.callbacks import (
    FAILED_STATUSES,
    Callback,
    CallbackSender,
    inbound_payload,
    plan_statuses,
    status_payload,
)
from devkit.simulator.messages import (
    MESSAGES_PATH,
    Credentials,
    Faults,
    error_problem,
    make_fault,
    refused,
    unauthorized,
)
from devkit.simulator.wire import Answer, RecordedRequest, Server, problem
from receiver.sending.bodies import CHANNELS, InvalidMessage, validate_message

DEFAULT_API_KEY = "a1b2c3d4"  # the api key in devkit.samples
DEFAULT_API_SECRET = "simulator-api-secret"
INBOUND_PATH = "/_simulator/inbound"
FAULTS_PATH = "/_simulator/faults"
OPTED_OUT_V1 = {"type": "https://developer.vonage.com/api-errors/messages#1240", "title": "1240",
                "detail": "The recipient has opted out of messages from this sender."}
OPTED_OUT_V01 = {"code": 1240, "reason": OPTED_OUT_V1["detail"]}
# What a web page in the developer's browser cannot send across origins without a CORS preflight, which
# the simulator never answers: so a page elsewhere cannot drive /_simulator/ (see _foreign).
LOCAL_HEADER = "X-Vonage-Simulator"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
PREVIEW_CHARS = 20  # of a message's text in event lines: enough to recognise it, not to log it


@dataclass
class SentMessage:
    """A message the simulator accepted; `statuses` in the order their callbacks were scheduled."""

    message_uuid: str
    body: dict
    workflow_id: str | None
    statuses: list[str]


class Simulator:
    """A local Vonage: Messages API sends, signed status callbacks, inbound replies, faults, configuration APIs.

    `public_key` (PEM) and `application_id` let the application's JWT in; `api_key`/`api_secret` are the
    account's Basic credentials; `signature_secret` signs callbacks, sent to `receiver_url` (or a message's
    `webhook_url`) `callback_delay` seconds apart. The shares are probabilities per message (reject) or per
    callback (duplicate); `seed` makes them repeatable. `on_event` gets one line per accepted message and per
    callback attempt.
    """

    def __init__(
        self,
        applications: dict | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        application_id: str | None = None,
        public_key: str | None = None,
        signature_secret: str | None = None,
        receiver_url: str | None = None,
        webhook_version: str = "v1",
        callback_delay: float = 0.3,
        reject_share: float = 0.05,
        duplicate_share: float = 0.05,
        out_of_order_share: float = 0.05,
        auto_reply_text: str | None = None,
        seed: int | None = None,
        callback_retries: int = 3,
        callback_backoff: float = 1.0,
        callback_timeout: tuple[float, float] = (3.0, 15.0),
        probe: bool = False,
        delay: float = 0.0,
        validation_status: int = 422,
        on_event: Callable[[str], None] | None = None,
    ):
        for name, share in (("reject_share", reject_share), ("duplicate_share", duplicate_share),
                            ("out_of_order_share", out_of_order_share)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {share}")
        self.api_key = api_key
        self.api_secret = api_secret
        self.application_id = application_id
        self.receiver_url = receiver_url.rstrip("/") if receiver_url else None
        self.webhook_version = webhook_version
        self.callback_delay = callback_delay
        self.reject_share = reject_share
        self.duplicate_share = duplicate_share
        self.out_of_order_share = out_of_order_share
        self.auto_reply_text = auto_reply_text
        self.delay = delay  # before answering any request, as a slow Vonage would
        self.on_event = on_event
        self.requests: list[RecordedRequest] = []
        self.sent: list[SentMessage] = []
        self.opted_out: set[str] = set()  # numbers whose messages Vonage accepts, then rejects with error 1240
        self.url: str | None = None
        self.stopping = threading.Event()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._faults = Faults()
        self._credentials = Credentials(application_id=application_id, public_key=public_key, api_key=api_key,
                                        api_secret=api_secret)
        self._configuration = ConfigurationAPI(applications, api_key=api_key, api_secret=api_secret, probe=probe,
                                               validation_status=validation_status)
        self.applications = self._configuration.applications
        self.account = self._configuration.account
        self._sender = CallbackSender(secret=signature_secret, api_key=api_key, application_id=application_id,
                                      timeout=callback_timeout, retries=callback_retries, backoff=callback_backoff,
                                      on_attempt=self._report_attempt)
        self._server: Server | None = None

    @property
    def callbacks(self) -> list[Callback]:
        """Every callback scheduled, with the receiver's answers so far."""
        return self._sender.callbacks

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in LOOPBACK_NAMES:  # it signs callbacks with the developer's secret: never on the network
            raise ValueError(f"the simulator listens on loopback only ({', '.join(LOOPBACK_NAMES)}), not {host!r}")
        self._server = Server(self.handle, host, port, self.stopping)
        self.url = self._server.url
        self._sender.start()
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._sender.stop()

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until every callback scheduled so far has gone out (retries included).

        :raises TimeoutError: some are still due after `timeout` seconds.
        """
        self._sender.wait_idle(timeout)

    def set_fault(self, kind: str, count: int = 1, **details) -> None:
        """Answer the next `count` sends with a fault; see messages.make_fault for the kinds and details."""
        self._faults.arm(make_fault(kind, count, **details))

    def clear_faults(self) -> None:
        self._faults.arm(None)

    def reply(self, to_message_uuid: str | None = None, text: str = "Thanks, that works for me", *,
              from_: str | None = None, to: str | None = None, channel: str | None = None) -> dict:
        """Play an inbound text to the receiver's inbound webhook now; return its payload.

        With `to_message_uuid` it comes from that message's recipient on its channel, quoting it on WhatsApp
        and Viber. Without, it comes from `from_` to `to` on `channel` (sms), sample numbers where not given.

        :raises ValueError: an unknown message uuid or channel.
        """
        quoting = None
        if to_message_uuid is not None:
            sent = next((m for m in self.sent if m.message_uuid == to_message_uuid), None)
            if sent is None:
                raise ValueError(f"no message {to_message_uuid} was sent through this simulator")
            channel, quoting = sent.body["channel"], (sent.message_uuid, sent.body["from"])
            from_, to = from_ or sent.body["to"], to or sent.body["from"]
        channel = channel or "sms"
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
        payload = inbound_payload(channel, text=text, from_=from_, to=to, quoting=quoting)
        self._sender.schedule(Callback("inbound-message", self._receiver("/webhooks/inbound-message"), payload),
                              time.monotonic())
        return payload

    def handle(self, req: RecordedRequest) -> Answer:
        """The answer to one request, recorded first."""
        with self._lock:
            self.requests.append(req)
        if self.delay:
            self.stopping.wait(self.delay)
        if req.path == MESSAGES_PATH:
            return self._send(req)
        if req.path in (INBOUND_PATH, FAULTS_PATH) and (why := self._foreign(req)):
            return refused(403, problem("https://developer.nexmo.com/api-errors#forbidden", "Forbidden", why))
        if req.path == INBOUND_PATH:
            return self._play_inbound(req)
        if req.path == FAULTS_PATH:
            return self._arm_fault(req)
        answer = self._configuration.handle(req)
        if answer is None:
            answer = Answer(404, problem("https://developer.nexmo.com/api-errors#not-found", "Not Found",
                                         f"No route for {req.path}"))
        return answer

    def _foreign(self, req: RecordedRequest) -> str | None:
        """Why this request to /_simulator/ may come from a web page rather than the developer; None if not.

        The Host must name loopback (no DNS rebinding); and the request carries the account's credentials,
        or JSON with the X-Vonage-Simulator header, which a cross-origin page cannot send unasked.
        """
        headers = {name.lower(): value for name, value in req.headers.items()}
        try:
            host = urlsplit("//" + headers.get("host", "")).hostname
        except ValueError:
            host = None
        if host not in LOOPBACK_NAMES:
            return f"the Host header must name this machine ({', '.join(LOOPBACK_NAMES)})"
        if self._credentials.refusal(headers.get("authorization")) is None:
            return None
        if headers.get("content-type", "").startswith("application/json") and headers.get(LOCAL_HEADER.lower()):
            return None
        return (f"send JSON (Content-Type: application/json) with the header {LOCAL_HEADER}: 1, "
                "or the account's Basic auth")

    def _send(self, req: RecordedRequest) -> Answer:
        if req.method != "POST":
            return refused(405, problem("https://developer.nexmo.com/api-errors#wrong-verb",
                                        "Request method not allowed", f"Request method '{req.method}' not supported"))
        refusal = self._credentials.refusal(req.headers.get("Authorization"))
        if refusal is not None:
            return unauthorized(refusal)
        fault = self._faults.take()
        if fault is not None and (answer := fault.answer()) is not None:
            return answer
        try:
            body = req.json()
        except ValueError:
            return refused(422, error_problem("1020", invalid_parameters=[{"name": "(body)",
                                                                           "reason": "is not valid JSON"}]))
        try:
            body = validate_message(body)
        except InvalidMessage as exc:
            return refused(422, error_problem("1020", invalid_parameters=[{"name": exc.name,
                                                                           "reason": exc.reason}]))
        sent = self._accept(body, silent=fault is not None and fault.kind == "silent")
        accepted = {"message_uuid": sent.message_uuid}
        if sent.workflow_id:
            accepted["workflow_id"] = sent.workflow_id
        answer = Answer(202, accepted)
        return fault.spoil(answer) if fault is not None else answer

    def _accept(self, body: dict, silent: bool = False) -> SentMessage:
        with self._lock:
            statuses = plan_statuses(body["channel"], self._rng, reject_share=self.reject_share,
                                     out_of_order_share=self.out_of_order_share)
            if silent:  # statuses that never come
                statuses = []
            elif body["to"] in self.opted_out:  # the recipient texted STOP to the carrier or Vonage
                statuses = ["rejected"]
            doubled = [self._rng.random() < self.duplicate_share for _ in statuses]
            workflow_id = str(uuid.uuid4()) if body.get("failover") else None
            sent = SentMessage(str(uuid.uuid4()), body, workflow_id, statuses)
            self.sent.append(sent)
        text = body.get("text") or ""
        preview = f" {text[:PREVIEW_CHARS]!r}{'...' if len(text) > PREVIEW_CHARS else ''}" if text else ""
        self._event(f"accepted {sent.message_uuid} {body['channel']} {body['message_type']} to {body['to']}{preview}")

        url = body.get("webhook_url") or self._receiver("/webhooks/message-status")
        version = body.get("webhook_version") or self.webhook_version
        start = time.monotonic()
        for position, (status, twice) in enumerate(zip(statuses, doubled), start=1):
            payload = status_payload(status, body, sent.message_uuid, version)
            if body["to"] in self.opted_out and "error" in payload:
                payload["error"] = OPTED_OUT_V1 if version == "v1" else OPTED_OUT_V01
            self._sender.schedule(Callback("message-status", url, payload), start + position * self.callback_delay)
            if twice:
                self._sender.schedule(Callback("message-status", url, payload, duplicate=True),
                                      start + position * self.callback_delay)
        if self.auto_reply_text and not set(statuses) & set(FAILED_STATUSES):
            quoting = (sent.message_uuid, body["from"])
            payload = inbound_payload(body["channel"], text=self.auto_reply_text, from_=body["to"], to=body["from"],
                                      quoting=quoting)
            self._sender.schedule(Callback("inbound-message", self._receiver("/webhooks/inbound-message"), payload),
                                  start + (len(statuses) + 1) * self.callback_delay)
        return sent

    def _play_inbound(self, req: RecordedRequest) -> Answer:
        try:
            fields = req.json()
            if not isinstance(fields, dict):
                raise ValueError("the body must be a JSON object")
            payload = self.reply(fields.get("reply_to"), fields.get("text") or "Thanks, that works for me",
                                 from_=fields.get("from"), to=fields.get("to"), channel=fields.get("channel"))
        except ValueError as exc:
            return refused(400, problem("https://developer.nexmo.com/api-errors#bad-request", "Bad Request", str(exc)))
        return Answer(202, {"message_uuid": payload["message_uuid"]})

    def _arm_fault(self, req: RecordedRequest) -> Answer:
        try:
            fields = req.json() if req.body else {}
            if not isinstance(fields, dict):
                raise ValueError("the body must be a JSON object")
            if req.method == "DELETE" or fields.get("kind") is None:
                self.clear_faults()
                return Answer(200, {"fault": None})
            self.set_fault(**fields)
        except (ValueError, TypeError) as exc:
            return refused(400, problem("https://developer.nexmo.com/api-errors#bad-request", "Bad Request", str(exc)))
        return Answer(200, {"fault": fields["kind"], "count": fields.get("count", 1)})

    def _receiver(self, path: str) -> str | None:
        return self.receiver_url + path if self.receiver_url else None

    def _report_attempt(self, callback: Callback) -> None:
        attempt = callback.attempts[-1]
        what = callback.payload.get("status", "inbound") if callback.kind == "message-status" else "inbound"
        answer = attempt.status if attempt.status is not None else attempt.error
        again = f" (attempt {len(callback.attempts)})" if len(callback.attempts) > 1 else ""
        copy = " (duplicate)" if callback.duplicate else ""
        self._event(f"sent {what} {callback.payload.get('message_uuid')}{copy} -> {callback.url}: {answer}{again}")

    def _event(self, line: str) -> None:
        if self.on_event is not None:
            self.on_event(line)


@contextlib.contextmanager
def running_simulator(applications: dict | None = None, *, host: str = "127.0.0.1", port: int = 0,
                      **options) -> Iterator[Simulator]:
    """A started `Simulator` (see its options) on host:port, port 0 meaning any free one; yields it with `.url`."""
    simulator = Simulator(applications, **options)
    simulator.start(host, port)
    try:
        yield simulator
    finally:
        simulator.stop()
