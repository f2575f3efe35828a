"""The console's pages under /ui: each view reads through Storage and renders one template.

No SQL here and no work beyond the page: the only writes are the operator's replays, replies, releases of held
messages and lifts of suppressed numbers.
"""
from __future__ import annotations

import time
from dataclasses import fields

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for

from receiver.operator import traffic
from receiver.operator.console import auth, health, present, problems
from receiver.sending import QUOTING_CHANNELS
from receiver.sending.bodies import InvalidMessage, build_message
from receiver.sending.delivery import NOT_CONFIGURED, silent_deadlines
from receiver.storage import get_storage
from receiver.storage.console import FEED_PAGE, PROBLEM_STATES, SCAN_WINDOW, Filters
from receiver.storage.stats import STATES
from receiver.webhooks.guard import get_guard
from receiver.worker import supervisor

bp = Blueprint("console", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
auth.protect(bp)
for name, function in present.FILTERS.items():
    bp.add_app_template_filter(function, name)


@bp.context_processor
def page_globals():
    return {"queue_bar": lambda: health.bar(get_storage(current_app)) if auth.signed_in() else None,
            "KINDS": present.FEED_KINDS, "STATES": STATES, "now": time.time()}


def _filters() -> Filters:
    return Filters(**_filter_args())


def _filter_args() -> dict:
    """The feed's filters as given, for links that keep them."""
    given = {field.name: (request.args.get(field.name) or "").strip()[:255] for field in fields(Filters)}
    return {name: value for name, value in given.items() if value}


@bp.get("/")
def feed():
    filters, before = _filters(), request.args.get("before", type=int)
    page = get_storage(current_app).reads.feed(filters, before=before)
    return render_template("console/feed.html", page=page, filters=filters, args=_filter_args(), before=before,
                           live=before is None, window=SCAN_WINDOW)


@bp.get("/feed/rows")
def feed_rows():
    """The live feed's poll: the rows newer than `after`, as HTML table rows. One short read, never held open."""
    page = get_storage(current_app).reads.feed(_filters(), after=request.args.get("after", 0, type=int))
    return render_template("console/_rows.html", rows=page.rows, gap=page.more_newer, limit=FEED_PAGE,
                           args=_filter_args())


@bp.get("/events/<int:event_id>")
def event(event_id: int):
    row = get_storage(current_app).reads.stored(event_id)
    if row is None:
        return auth.refuse(404, "not_found", f"No event {event_id} is stored.")
    curl, curl_problem = present.resigned_curl(row, get_guard(current_app).keyring, current_app.config,
                                               request.host_url)
    return render_template("console/event.html", page=present.event_page(row), curl=curl, curl_problem=curl_problem)


@bp.post("/events/<int:event_id>/replay")
def replay(event_id: int):
    if get_storage(current_app).inbox.replay([event_id]):
        flash(f"Event {event_id} is pending again: the worker will process it.")
    else:
        flash(f"Event {event_id} was not replayed: only done, failed, dead or invalid events can be.")
    if request.form.get("back") == "problems":
        return redirect(url_for("console.problems_page"))
    return redirect(url_for("console.event", event_id=event_id))


@bp.get("/messages/<anyid:message_id>", merge_slashes=False, strict_slashes=False)
def message(message_id: str):
    storage = get_storage(current_app)
    found = storage.reads.timeline(message_id)
    if found is None:
        return auth.refuse(404, "not_found", "No message with that id has been processed.")
    can_reply = found.message.direction == "inbound" and current_app.extensions["sending_configured"]
    return render_template("console/message.html", timeline=found, steps=present.steps(found.history),
                           workflows=present.workflows(found.conversation_statuses),
                           sent=storage.outbox.sent_as(message_id), can_reply=can_reply)


@bp.post("/messages/<anyid:message_id>/reply", merge_slashes=False)
def reply(message_id: str):
    """Answer an inbound message from the console: queued in the outbox like any send."""
    storage = get_storage(current_app)
    found = storage.reads.timeline(message_id)
    if found is None or found.message.direction != "inbound":
        return auth.refuse(404, "not_found", "Only an inbound message can be answered.")
    if not current_app.extensions["sending_configured"]:
        return auth.refuse(400, "sending_not_configured", NOT_CONFIGURED)
    m = found.message
    try:
        body = build_message(m.channel, to=m.from_number, from_=m.to_number, text=request.form.get("text", ""),
                             reply_to=m.message_id if m.channel in QUOTING_CHANNELS else None)
    except InvalidMessage as exc:
        flash(f"Not sent: {exc}")
    else:
        flash(f"Reply queued as outbox message {storage.outbox.queue(body)}: the worker sends it.")
        supervisor.notify(current_app)
    return redirect(url_for("console.message", message_id=message_id))


@bp.get("/problems")
def problems_page():
    storage = get_storage(current_app)
    rows = storage.reads.problem_events(problems.SCAN)
    silent_count, silent = storage.outbox.silent(silent_deadlines(current_app.config), limit=problems.PREVIEW_SENDS)
    return render_template("console/problems.html", groups=problems.group_events(rows), scanned=len(rows),
                           scan=problems.SCAN, rejections=problems.group_rejections(storage.reads.rejections(limit=1000)),
                           silent=silent, silent_count=silent_count, suppressed=storage.outbox.suppressed(),
                           held=storage.outbox.listed(state="held", limit=problems.PREVIEW_SENDS))


@bp.post("/outbox/<int:message_id>/release")
def release(message_id: int):
    released = get_storage(current_app).outbox.release(message_id)
    flash(f"Outbox {message_id} is queued to send." if released else f"Outbox {message_id} is not held.")
    supervisor.notify(current_app)
    return redirect(url_for("console.problems_page"))


@bp.post("/suppressions/lift")
def lift():
    number = request.form.get("number", "")
    lifted = get_storage(current_app).outbox.lift(number)
    flash(f"{number} may be sent to again." if lifted else f"{number} is not on the suppression list.")
    return redirect(url_for("console.problems_page"))


@bp.get("/problems/<key>/replay")
def replay_preview(key: str):
    group = problems.find_group(get_storage(current_app).reads.problem_events(problems.SCAN), key)
    if group is None:
        return auth.refuse(404, "not_found", "That group has no events left to replay.")
    return render_template("console/replay.html", group=group, ids=group.ids[:problems.MAX_REPLAY],
                           preview=group.ids[:problems.PREVIEW_IDS])


@bp.post("/problems/<key>/replay")
def replay_group(key: str):
    ids = [int(i) for i in request.form.get("ids", "").split(",") if i.strip().isdigit()][:problems.MAX_REPLAY]
    moved = get_storage(current_app).inbox.replay(ids, PROBLEM_STATES)  # a done event is not a problem
    flash(f"{moved} of {len(ids)} events are pending again: the worker will process them.")
    return redirect(url_for("console.problems_page"))


@bp.get("/health")
def health_page():
    storage = get_storage(current_app)
    # Without sending credentials, what a handler's reply() queued waits forever: say so here.
    unsent = None if current_app.extensions["sending_configured"] else len(storage.outbox.listed(state="queued",
                                                                                                  limit=1000))
    return render_template("console/health.html", health=health.health(storage), keep_days=traffic.KEEP_DAYS,
                           unsent=unsent, not_configured=NOT_CONFIGURED)


def root():
    """`/`: the console when it is enabled; otherwise the JSON 404 of any unknown path."""
    if not current_app.config.get("ADMIN_TOKEN"):
        abort(404)
    return redirect(url_for("console.feed"))
