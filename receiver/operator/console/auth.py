"""Who may use the console: ADMIN_TOKEN, a signed session cookie naming a server-side session
(console.sessions), a CSRF token per session, strict headers.

Fails closed: without ADMIN_TOKEN every /ui page is 404. The cookie is signed with a key derived
from the token and its session is recorded with the token's mark, so rotating ADMIN_TOKEN logs
everyone out; logging out deletes the record, so a copy of the cookie opens nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import Blueprint, Flask, abort, current_app, g, jsonify, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from receiver.operator import throttle
from receiver.operator.console import sessions
from receiver.platform.devfiles import made_once
from receiver.webhooks.guard import token_matches

DEV_TOKEN_FILE = "dev-admin-token"
SESSION_KEY_LABEL = b"vonage-webhook-receiver console session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class OperatorSession(SecureCookieSessionInterface):
    """Flask's signed cookie session, keyed by ADMIN_TOKEN, HttpOnly, SameSite=Lax, sent only to /ui,
    and Secure whenever the request came over HTTPS (behind ProxyFix: as the proxy says)."""

    salt = "console-session"

    def open_session(self, app: Flask, request):
        # The console's pages are the only ones with a session: a webhook or an API call gets Flask's
        # null session, so acknowledging a callback never derives a key or reads a cookie.
        if not request.path.startswith("/ui"):
            return None
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        token = app.config.get("ADMIN_TOKEN")
        if not token:
            return None
        key = hmac.new(token.encode(), SESSION_KEY_LABEL, hashlib.sha256).digest()
        return URLSafeTimedSerializer(key, salt=self.salt, serializer=self.serializer,
                                      signer_kwargs={"key_derivation": self.key_derivation,
                                                     "digest_method": self.digest_method})

    def get_cookie_name(self, app: Flask) -> str:
        return "console_session"

    def get_cookie_path(self, app: Flask) -> str:
        return "/ui"

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Lax"

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def development_token(instance_path: str) -> str:
    """The local admin token under instance/ (mode 0600), generated on first use, like the signing secret."""
    return made_once(instance_path, DEV_TOKEN_FILE, lambda: secrets.token_urlsafe(32))[0]


def same_token(given: str | None) -> bool:
    return token_matches(given, current_app.config.get("ADMIN_TOKEN"))


def csrf_token() -> str:
    """This session's CSRF token (made on first use), for the hidden field of every form."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _csrf_ok() -> bool:
    return token_matches(request.form.get("csrf_token") or request.headers.get("X-CSRF-Token"), session.get("csrf"))


def require_operator():
    """Before every /ui request: 404 without ADMIN_TOKEN, 403 for a write without the CSRF token,
    the login page for anyone not logged in."""
    if not current_app.config.get("ADMIN_TOKEN"):
        abort(404)
    if request.method not in SAFE_METHODS and not _csrf_ok():
        return refuse(403, "csrf_failed", "this form is out of date or was not sent by the console: reload the page")
    if request.endpoint == "console.static":
        return None
    g.signed_in_since = sessions.signed_in_since(current_app, session.get("sid"),
                                                 activity=request.endpoint != "console.feed_rows")
    if g.signed_in_since is not None or request.endpoint == "console.login":
        return None
    if request.endpoint == "console.feed_rows":  # the live feed's poll: the script reloads into the login page
        return refuse(401, "login_required", "log in again")
    return redirect(url_for("console.login", next=request.full_path.rstrip("?")))


def refuse(status: int, code: str, message: str):
    """The one error answer of the console: a small page, or the app's JSON error shape."""
    if request.accept_mimetypes.accept_html:
        return render_template("console/refused.html", status=status, message=message), status
    return jsonify(error=code, message=message), status


def secure_headers(response):
    """After every /ui request: no framing, no inline code, nothing cached, no referrer."""
    response.headers.update(HEADERS)
    return response


def login():
    """GET: the form (in development, ?token= logs in and leaves the token out of the URL); POST: log in."""
    given = request.form.get("token") if request.method == "POST" else None
    if request.method == "GET" and "token" in request.args and current_app.config["APP_ENV"] == "development":
        given = request.args["token"]  # the URL `dev.py serve` prints, as Jupyter does
    if given is not None:
        wait = throttle.wait_for("login")
        if wait is not None:
            response = current_app.make_response(refuse(429, "too_many_attempts", throttle.message(wait)))
            response.headers["Retry-After"] = str(wait)
            return response
        if same_token(given):
            sessions.close_session(current_app, session.get("sid"))
            session.clear()
            session.update(sid=sessions.open_session(current_app), csrf=secrets.token_urlsafe(32))
            return redirect(_next_page())
        throttle.wrong_token("login")
        return render_template("console/login.html", wrong=True, next=_next_page()), 401
    return render_template("console/login.html", wrong=False, next=_next_page())


def logout():
    sessions.close_session(current_app, session.get("sid"))
    session.clear()
    return redirect(url_for("console.login"))


def _next_page() -> str:
    """Where to go after logging in: a console page only, never another site."""
    target = request.values.get("next") or ""
    return target if target.startswith("/ui/") and not target.startswith("/ui//") else url_for("console.feed")


def protect(bp: Blueprint) -> None:
    """Put every page of the console behind the checks above, and add login and logout."""
    bp.before_request(require_operator)
    bp.after_request(secure_headers)
    bp.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    bp.add_url_rule("/logout", "logout", logout, methods=["POST"])
    bp.add_app_template_global(csrf_token)
    bp.add_app_template_global(signed_in, "signed_in")


def signed_in() -> float | None:
    """For the templates: when this request's session was opened (None: not signed in)."""
    return g.get("signed_in_since")


def init_app(app: Flask) -> None:
    """The session cookie, and in development (APP_ENV=development) a generated ADMIN_TOKEN when none is set."""
    if not app.config.get("ADMIN_TOKEN") and app.config["APP_ENV"] == "development":
        app.config["ADMIN_TOKEN"] = development_token(app.instance_path)
    app.session_interface = OperatorSession()
