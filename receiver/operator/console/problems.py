"""The problems page's groups: failed, dead and invalid events by cause, and signature rejections by
reason with what to do about each. Pure functions over stored rows.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

SCAN = 2000  # problem events read per page view, newest first
MAX_REPLAY = 1000  # events one click replays
PREVIEW_IDS = 10
PREVIEW_SENDS = 50  # silent and held messages listed

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]*)", line \d+, in (?P<name>\S+)')

# What each rejection reason usually means, and the fix.
HINTS = {
    "bad_signature": "The JWT is signed with another secret than the one configured: copy the signature secret "
                     "from the Vonage dashboard (API settings) into VONAGE_SIGNATURE_SECRET.",
    "bad_sig": "The SMS sig does not match: VONAGE_SIGNATURE_SECRET or VONAGE_SIGNATURE_METHOD is not the "
               "dashboard's (API settings).",
    "unknown_api_key": "Signed for an API key with no secret here: add that key to VONAGE_SIGNATURE_SECRETS "
                       "(key=secret;...), or set VONAGE_API_KEY to it.",
    "stale_timestamp": "The SMS timestamp is too far from this clock: check the server's time (NTP), or widen "
                       "SMS_TIMESTAMP_WINDOW_SECONDS.",
    "iat_in_future": "The token was issued in the future by this clock: check the server's time (NTP), or "
                     "raise JWT_IAT_LEEWAY_SECONDS.",
    "token_too_old": "Older than JWT_MAX_AGE_SECONDS: Vonage's retries can carry old tokens; raise it or set 0.",
    "token_expired": "The token's exp has passed: check the server's time (NTP).",
    "payload_hash_mismatch": "The body is not the one that was signed: something between Vonage and the app "
                             "rewrites bodies (a proxy re-encoding JSON?), or it is a forgery.",
    "missing_token": "No Authorization header: answered 503 and Vonage retries it signed. Many of them: a proxy "
                     "strips the Authorization header.",
    "missing_sig": "An unsigned SMS API callback: enable signed webhooks on the account in the dashboard, or set "
                   "SIGNATURE_VERIFICATION=jwt-only.",
    "duplicate_param": "A parameter appears twice: Vonage never sends that; a forgery or a mangled request.",
    "missing_timestamp": "An SMS API callback without timestamp: not one Vonage signed.",
    "malformed_params": "Parameters that are not text: not a request Vonage sent.",
}
NOT_VONAGE = "Not a token Vonage issues: a scanner, or a client that is not Vonage calling the webhook."


def hint(reason: str) -> str:
    return HINTS.get(reason, NOT_VONAGE)


def exception_line(error: str) -> str:
    """The exception a traceback ends with ("RuntimeError: CRM is down"); the first line of other text."""
    lines = error.strip().splitlines()
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    after = lines[frames[-1] + 1:] if frames else lines
    return next((line for line in after if line and not line[0].isspace()), lines[0] if lines else "")


def handler_name(error: str) -> str | None:
    """The function of the traceback's last frame under handlers/: the handler that raised."""
    names = [m["name"] for m in map(_FRAME.match, error.splitlines())
             if m and "/handlers/" in m["path"].replace("\\", "/")]
    return names[-1] if names else None


def cause(row) -> tuple[str, str]:
    """(kind of problem, cause) of one failed, dead or invalid event."""
    error = row.last_error or ""
    if row.state == "invalid":
        try:
            fields = json.loads(error)
        except ValueError:
            fields = None
        if isinstance(fields, dict) and fields:
            return "invalid", "fields: " + ", ".join(sorted(fields))
        return "invalid", exception_line(error) or "no reason kept"
    exception = exception_line(error).split(":", 1)[0] or "no traceback kept"
    handler = handler_name(error)
    return "failing", f"{exception} in {handler}" if handler else f"{exception} outside the handlers (a bug?)"


@dataclass
class Group:
    kind: str  # the callback kind
    problem: str  # failing or invalid
    cause: str
    ids: list = field(default_factory=list)  # newest first
    states: dict = field(default_factory=dict)  # state -> count
    example: str = ""  # the newest one's exception line
    newest_at: float = 0.0

    @property
    def key(self) -> str:
        """A short stable name for this group in URLs."""
        return hashlib.sha256(f"{self.kind}\n{self.problem}\n{self.cause}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


def group_events(rows: list) -> list[Group]:
    """Problem events grouped by (kind, cause), the largest group first."""
    groups: dict[tuple, Group] = {}
    for row in rows:
        problem, why = cause(row)
        group = groups.get((row.kind, problem, why))
        if group is None:
            group = groups[(row.kind, problem, why)] = Group(row.kind, problem, why,
                                                             example=exception_line(row.last_error or ""),
                                                             newest_at=row.received_at)
        group.ids.append(row.id)
        group.states[row.state] = group.states.get(row.state, 0) + 1
    return sorted(groups.values(), key=lambda g: (-len(g.ids), -g.newest_at))


def find_group(rows: list, key: str) -> Group | None:
    return next((group for group in group_events(rows) if group.key == key), None)


@dataclass
class Rejections:
    reason: str
    count: int
    last_at: str
    paths: list
    detail: str
    hint: str


def group_rejections(rejections: list[dict]) -> list[Rejections]:
    """Kept rejections (newest first) by reason, the most frequent first."""
    found: dict[str, Rejections] = {}
    for r in rejections:
        group = found.get(r["reason"])
        if group is None:
            group = found[r["reason"]] = Rejections(r["reason"], 0, r["at"], [], r["detail"] or "", hint(r["reason"]))
        group.count += r["count"]
        if r["path"] not in group.paths:
            group.paths.append(r["path"])
    return sorted(found.values(), key=lambda g: -g.count)
