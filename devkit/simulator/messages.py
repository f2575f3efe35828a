"""The Messages API's front door as the simulator plays it: who may send, Vonage's error bodies, and the
faults a test can arm for the next sends. Deciding what happens to an accepted message is vonage.py's job.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import threading
from dataclasses import dataclass, field

import jwt

from devkit.simulator.wire import Answer, problem

MESSAGES_PATH = "/v1/messages"

# Codes and titles from Vonage's Messages API error list (its error code reference). Where the docs do not say which
# HTTP status carries a code (all but 1000 and 1030), the status here is our guess; the client reads every
# 4xx but 429 the same way.
ERRORS = {
    "1000": (429, "Throttled",
             "You have exceeded the submission capacity allowed on this account. Please wait and retry."),
    "1020": (422, "Invalid params", "The value of one or more parameters is invalid."),
    "1022": (422, "Invalid template", "The template does not exist or its parameters do not match it."),
    "1030": (500, "Internal error", "There was an error processing your request in the Platform."),
    "1050": (403, "Recipient barred", "The recipient cannot receive messages from this sender."),
    "1070": (402, "Quota exceeded", "Your account does not have sufficient credit to process this request."),
    "1120": (400, "Invalid sender", "The `from` parameter is invalid."),
    "1240": (403, "Illegal Sender Address - rejected", "The recipient has opted out of messages from this sender."),
    "1340": (422, "Outside of the allowed window", "This message is sent outside of allowed response window."),
}
FAULT_KINDS = ("throttle", "server_error", "problem", "slow", "drop", "trickle", "huge", "silent")


def error_problem(code: str, **extra) -> dict:
    """Vonage's problem body for a Messages API error code."""
    _, title, detail = ERRORS[code]
    return problem(f"https://developer.nexmo.com/api-errors/messages#{code}", title, detail, **extra)


def unauthorized(reason: str) -> Answer:
    # Vonage does not say why; the simulator does, because it runs for the developer who must fix it.
    return Answer(401, problem("https://developer.nexmo.com/api-errors#unauthorized", "Unauthorized",
                               f"You did not provide correct credentials ({reason})."),
                  headers={"Content-Type": "application/problem+json"})


def refused(status: int, body: dict, headers: dict | None = None) -> Answer:
    return Answer(status, body, headers={"Content-Type": "application/problem+json", **(headers or {})})


class Credentials:
    """Checks a send's Authorization as Vonage does: the application's RS256 JWT, or the account's Basic auth."""

    def __init__(self, *, application_id: str | None, public_key: str | None, api_key: str, api_secret: str):
        self.application_id = application_id
        self.public_key = public_key
        self._basic = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode("ascii")

    def refusal(self, authorization: str | None) -> str | None:
        """Why these credentials are refused; None when they are good."""
        scheme, _, value = (authorization or "").strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                given = base64.b64encode(base64.b64decode(value.strip(), validate=True)).decode("ascii")
            except (binascii.Error, ValueError):
                return "Basic credentials are not base64"
            return None if hmac.compare_digest(given, self._basic) else "wrong API key or secret"
        if scheme.lower() == "bearer":
            return self._token_refusal(value.strip())
        return "no Authorization header" if not authorization else "Authorization is neither Bearer nor Basic"

    def _token_refusal(self, token: str) -> str | None:
        if not self.public_key or not self.application_id:
            return "this simulator has no application public key, so only Basic auth works"
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"],
                                options={"require": ["application_id", "iat", "exp", "jti"]})
        except jwt.ExpiredSignatureError:
            return "the token has expired"
        except jwt.MissingRequiredClaimError as exc:
            return f"the token has no {exc.claim} claim"
        except jwt.InvalidSignatureError:
            return "the token's signature does not verify with the application's public key"
        except jwt.InvalidTokenError as exc:
            return f"the token is not valid: {exc}"
        if claims["application_id"] != self.application_id:
            return "the token's application_id is not this application"
        return None


@dataclass
class Fault:
    """What the next `count` sends get instead of a plain 202. See `make_fault` for the kinds."""

    kind: str
    count: int = 1
    status: int | None = None
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    seconds: float = 0.0
    accept: bool = False  # for "drop": whether the message was accepted before the connection broke
    phase: str = "headers"  # for "trickle": dribble from the status line, or only the body

    def answer(self) -> Answer | None:
        """The answer that replaces accepting the message; None for faults that accept it first."""
        if self.kind in ("throttle", "server_error", "problem"):
            return refused(self.status, self.body, self.headers)
        if self.kind == "drop" and not self.accept:
            return Answer(0, drop=True)
        return None

    def spoil(self, accepted: Answer) -> Answer:
        """The 202 for a message accepted under a "slow", "drop", "trickle" or "huge" fault."""
        accepted.delay = self.seconds if self.kind == "slow" else 0.0
        accepted.drop = self.kind == "drop"
        if self.kind == "trickle":
            accepted.trickle, accepted.trickle_from = self.seconds, self.phase
        if self.kind == "huge":  # the message_uuid is there, after megabytes of padding
            accepted.body_bytes = b'{"padding": "' + b"x" * int(self.seconds * 1024 * 1024) + b'", ' \
                                  + b'"message_uuid": "' + str(accepted.body["message_uuid"]).encode() + b'"}'
        return accepted


def make_fault(kind: str, count: int = 1, *, status: int | None = None, retry_after: int | str | None = None,
               code: str | None = None, invalid_parameters: list | None = None, body: dict | None = None,
               seconds: float = 2.0, accept: bool = False, phase: str = "headers") -> Fault:
    """A fault for the next `count` sends:

    - "throttle": 429 with error 1000, and `Retry-After: retry_after` when given (seconds or an HTTP-date);
    - "server_error": `status` (500) with error 1030;
    - "problem": Vonage's error `code` (1020) with its status, or `status`; `invalid_parameters` or a whole
      `body` replace the default body;
    - "slow": the message is accepted and its callbacks go out, but the 202 leaves `seconds` late;
    - "drop": the connection is closed after the request is read, with the message accepted if `accept`;
    - "trickle": the message is accepted, and its 202 leaves one byte every `seconds`, from the status line
      (`phase` "headers") or once the headers are out ("body");
    - "huge": the message is accepted, and its 202's body is `seconds` megabytes long;
    - "silent": the message is accepted with a 202, and no status callback ever comes for it.
    A 429 with `retry_after` "9" * 400 is the huge Retry-After; code "1240" the recipient who opted out.

    :raises ValueError: an unknown kind or code, or a count below 1.
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
    if not isinstance(count, int) or count < 1:
        raise ValueError("fault count must be a whole number of sends, at least 1")
    code = {"throttle": "1000", "server_error": "1030"}.get(kind, code or "1020")
    if code not in ERRORS:
        raise ValueError(f"error code must be one of {', '.join(ERRORS)}, got {code!r}")
    if phase not in ("headers", "body"):
        raise ValueError(f"trickle phase must be headers or body, got {phase!r}")
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    if body is None:
        extra = {"invalid_parameters": invalid_parameters or [{"name": "to", "reason": "is not a valid number"}]}
        body = error_problem(code, **(extra if code == "1020" else {}))
    return Fault(kind, count, status or ERRORS[code][0], headers, body, float(seconds), bool(accept), phase)


class Faults:
    """The one fault armed for the next sends, used up one send at a time."""

    def __init__(self):
        self._fault: Fault | None = None
        self._lock = threading.Lock()

    def arm(self, fault: Fault | None) -> None:
        with self._lock:
            self._fault = fault

    def take(self) -> Fault | None:
        with self._lock:
            fault = self._fault
            if fault is not None:
                fault.count -= 1
                if fault.count == 0:
                    self._fault = None
            return fault
