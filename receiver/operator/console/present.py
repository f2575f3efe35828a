"""What the event and message pages show, made from stored rows: pure functions, no SQL, no Flask request.

Everything returned is plain text for the templates to escape: a stored value is never marked safe.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from receiver.kinds import KINDS
from receiver.operator.signed import curl_command, replayable
from receiver.platform.formats import stored_object
from receiver.storage.events import REPLAYABLE_STATES
from receiver.webhooks.payloads import UNVERIFIED, DuplicateParameter, json_object
from receiver.webhooks.routes import KEPT_HEADERS

FEED_KINDS = tuple(KINDS)


def pretty_body(body: bytes) -> str:
    """The body as received: indented JSON when it is JSON, else its text (hex when it is not UTF-8)."""
    parsed = json_object(body)
    if parsed is not None:
        return json.dumps(parsed, indent=2, ensure_ascii=False)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.hex()


def parameters(row) -> list[tuple[str, str]]:
    """An SMS API callback's parameters as it was verified (query, form or JSON), else the query string's."""
    if KINDS[row.kind].transport.signature == "sig":
        try:
            return sorted(KINDS[row.kind].transport.read(row.query, row.body, row.content_type).items())
        except DuplicateParameter:
            pass  # shown as sent, repeats included
    return parse_qsl(row.query, keep_blank_values=True)


def verification(row, headers: dict) -> str:
    """How this callback was verified before it was stored, from its kind and the claims kept with it."""
    if UNVERIFIED in headers:
        return f"not verified: {headers[UNVERIFIED]} when it arrived"
    transport = KINDS[row.kind].transport
    if transport.signature == "jwt" and not headers.get("api_key"):
        return "Messages API JWT: no verified claims were kept (SIGNATURE_VERIFICATION=off when it arrived?)"
    return transport.verification.format(api_key=headers.get("api_key") or headers.get("api-key"))


@dataclass(frozen=True)
class EventPage:
    row: object
    body: str
    params: list
    headers: list  # (name, value) of the request headers kept
    claims: list  # (name, value) of the verified token's claims or the SMS signing parameters
    verification: str
    invalid: dict | None  # field -> messages, for an invalid event
    replayable: bool


def event_page(row) -> EventPage:
    headers = stored_object(row.headers)
    names = KINDS[row.kind].transport.claims
    invalid = None
    if row.state == "invalid" and row.last_error:
        try:
            invalid = json.loads(row.last_error)
        except ValueError:
            invalid = None
        # field -> its reasons, as the worker writes them; anything else stored there is shown as text
        invalid = ({str(field): [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)]
                    for field, reasons in invalid.items()} if isinstance(invalid, dict) else None)
    return EventPage(
        row=row,
        body=pretty_body(row.body) if row.body else "",
        params=parameters(row),
        headers=[(name, headers[name]) for name in KEPT_HEADERS if name in headers],
        claims=[(name, str(headers[name])) for name in names if name in headers],
        verification=verification(row, headers),
        invalid=invalid,
        replayable=row.state in REPLAYABLE_STATES,
    )


def resigned_curl(row, keyring, config: dict, base_url: str) -> tuple[str | None, str | None]:
    """(the stored callback as a curl command freshly signed with the app's current secret, None) or
    (None, why it cannot be), as `flask events resend` would send it to `base_url`."""
    try:
        stored = replayable(row)
    except DuplicateParameter as exc:
        return None, f"it has the parameter {exc} twice, so no signature covers it"
    if not _is_utf8(row.body):
        return None, "its body is not UTF-8 text, which a shell command line cannot carry"
    api_key = (stored.api_key if isinstance(stored.api_key, str) else None) or config.get("VONAGE_API_KEY")
    secrets = keyring.secrets_for(api_key) if api_key else []
    if not secrets:
        return None, f"no signature secret is configured for api key {api_key or '(none)'}"
    # A Messages callback is about the configured application when its token named none.
    application_id = stored.application_id if isinstance(stored.application_id, str) else None
    application_id = application_id or (config.get("VONAGE_APPLICATION_ID")
                                        if KINDS[row.kind].transport.signature == "jwt" else None)
    try:
        return curl_command(row.kind, stored.payload, base_url, secrets[0], api_key,
                            config["VONAGE_SIGNATURE_METHOD"], stored.via, application_id), None
    except UnicodeError:
        return None, "it holds a lone surrogate, text that UTF-8 cannot carry, so it cannot be signed again as sent"


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class Step:
    """One status of a message's timeline."""

    status: str
    timestamp: str | None  # as Vonage stamped it
    arrived: int  # 1 for the first to arrive
    event_id: int
    recorded_at: float
    applied: bool  # False: superseded, a later status had already arrived
    error_code: str | None
    late: bool = False  # a status Vonage stamped later arrived before this one


def steps(history: list) -> list[Step]:
    """The statuses in the order Vonage stamped them (ties: the order they arrived)."""
    arrived = [Step(h.status, h.timestamp, n, h.event_id, h.recorded_at, bool(h.applied), h.error_code)
               for n, h in enumerate(history, start=1)]
    stamped = sorted(arrived, key=lambda step: (step.timestamp or "", step.arrived))
    return [replace(step, late=any(other.arrived < step.arrived for other in stamped[i + 1:]))
            for i, step in enumerate(stamped)]


@dataclass(frozen=True)
class Workflow:
    """A failover send: the messages Vonage tried in turn, one per channel."""

    workflow_id: str
    items: list  # (item number, total, message_id, status, event_id), in item order


def workflows(status_events: list) -> list[Workflow]:
    """Status events whose body carries a `workflow` object, grouped by its id (either spelling)."""
    found: dict[str, dict] = {}
    for event in status_events:
        payload = json_object(event.body) or {}
        workflow = payload.get("workflow")
        if not isinstance(workflow, dict):
            continue
        workflow_id = workflow.get("id") or workflow.get("workflow_id")
        if not isinstance(workflow_id, str):
            continue
        number = str(workflow.get("item_number") or workflow.get("items_number") or "?")
        total = str(workflow.get("items_total") or workflow.get("total_items") or "?")
        # One line per message of the workflow: its newest status.
        found.setdefault(workflow_id, {})[event.message_id] = (number, total, event.message_id, event.status, event.id)
    return [Workflow(workflow_id, sorted(items.values())) for workflow_id, items in found.items()]


# -- template filters ------------------------------------------------------------------------------
def when(epoch: float | None) -> str:
    """An epoch time as `2026-12-01 08:15:55` (UTC, as every time in the console); a number no calendar
    holds (a claim's far-past iat, say) as itself."""
    if epoch is None:
        return ""
    try:
        return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{epoch} (not a date)"


def printable(value):
    """Every value a template prints: a lone surrogate (JSON can carry one as an escape, UTF-8 cannot)
    is shown as its escape, so no stored text can make a page that cannot be sent."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def duration(seconds: float | None) -> str:
    """`45 s`, `12 min`, `3.5 h`, `2.0 d`."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def milliseconds(ms: float | None) -> str:
    if ms is None:
        return "-"
    return "over 10 s" if ms == float("inf") else f"≤ {ms:g} ms"


def short(message_id: str) -> str:
    """A message id short enough for a table cell; the full one is on its page."""
    return message_id if len(message_id) <= 13 else message_id[:8] + "…" + message_id[-4:]


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


FILTERS = {"when": when, "duration": duration, "ms": milliseconds, "short": short, "ordinal": ordinal}
