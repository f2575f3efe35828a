"""The console's door: ADMIN_TOKEN or 404, the login form and its session cookie, CSRF on every
write, and the headers of every /ui response."""
import os
import re
import stat

import pytest

from devkit import samples
from receiver.operator.console.auth import DEV_TOKEN_FILE, HEADERS
from tests.conftest import ADMIN_TOKEN
from tests.console_client import csrf, csrf_of, login


@pytest.mark.parametrize("path", ["/ui/", "/ui/login", "/ui/static/console.css", "/ui/events/1", "/ui/health"])
def test_without_admin_token_the_console_is_404(make_app, path):
    client = make_app(ADMIN_TOKEN=None).test_client()
    assert client.get(path).status_code == 404
    assert client.post("/ui/login", data={"token": ""}).status_code == 404


def test_root_redirects_to_the_console_only_when_it_is_enabled(client, make_app):
    assert client.get("/").headers["Location"] == "/ui/"
    closed = make_app(ADMIN_TOKEN=None).test_client().get("/")
    assert closed.status_code == 404 and closed.get_json()["error"] == "not_found"


def test_pages_send_a_visitor_to_the_login_form_and_back(client):
    response = client.get("/ui/events/7?x=1")
    assert response.status_code == 302 and response.headers["Location"] == "/ui/login?next=/ui/events/7?x%3D1"
    form = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'name="token"' in form and 'name="next" value="/ui/events/7?x=1"' in form
    back = client.post("/ui/login", data={"token": ADMIN_TOKEN, "csrf_token": csrf_of(form), "next": "/ui/events/7?x=1"})
    assert back.headers["Location"] == "/ui/events/7?x=1"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui/", "/ui//evil.example", "/api/events"])
def test_login_never_redirects_off_the_console(client, target):
    form = client.get("/ui/login").get_data(as_text=True)
    response = client.post("/ui/login", data={"token": ADMIN_TOKEN, "csrf_token": csrf_of(form), "next": target})
    assert response.headers["Location"] == "/ui/"


def test_a_wrong_token_is_refused_and_logs_nobody_in(client):
    assert login(client, "not-the-token").status_code == 401
    assert login(client, ADMIN_TOKEN + "x").status_code == 401
    assert client.get("/ui/").status_code == 302


def test_the_session_cookie_is_signed_httponly_lax_and_only_for_the_console(client):
    response = login(client)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("console_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http on loopback: a Secure cookie would never come back


def test_the_cookie_is_secure_over_https(client):
    form = client.get("/ui/login", base_url="https://localhost").get_data(as_text=True)
    response = client.post("/ui/login", base_url="https://localhost",
                           data={"token": ADMIN_TOKEN, "csrf_token": csrf_of(form)})
    assert "Secure" in response.headers["Set-Cookie"]


def test_the_cookie_is_secure_behind_a_tls_proxy(make_app):
    client = make_app(PROXY_FIX_HOPS=1).test_client()
    client.environ_base["HTTP_X_FORWARDED_PROTO"] = "https"
    assert "Secure" in login(client).headers["Set-Cookie"]


def test_rotating_admin_token_logs_everyone_out(app, operator):
    assert operator.get("/ui/").status_code == 200
    app.config["ADMIN_TOKEN"] = "the-new-token"
    assert operator.get("/ui/").status_code == 302


def test_a_forged_cookie_is_not_a_session(client):
    client.set_cookie("console_session", "eyJvcGVyYXRvciI6dHJ1ZX0.forged.signature", path="/ui")
    assert client.get("/ui/").status_code == 302


def test_logout_needs_the_csrf_token_and_ends_the_session(operator):
    assert operator.post("/ui/logout").status_code == 403
    assert operator.get("/ui/").status_code == 200
    response = operator.post("/ui/logout", data={"csrf_token": csrf(operator)})
    assert response.headers["Location"] == "/ui/login"
    assert operator.get("/ui/").status_code == 302


def test_login_itself_needs_the_form_csrf_token(client):
    assert client.post("/ui/login", data={"token": ADMIN_TOKEN}).status_code == 403


@pytest.mark.parametrize("sent", [None, "", "wrong-token"])
def test_a_replay_without_the_right_csrf_token_is_refused(operator, vonage, work, storage, sent):
    vonage.status(samples.message_status("delivered"))
    work()
    data = {} if sent is None else {"csrf_token": sent}
    page = operator.post("/ui/events/1/replay", data=data, headers={"Accept": "text/html"})
    assert page.status_code == 403 and "reload the page" in page.get_data(as_text=True)
    api = operator.post("/ui/events/1/replay", data=data, headers={"Accept": "application/json"})
    assert api.status_code == 403 and api.get_json()["error"] == "csrf_failed"
    assert storage.reads.event(1)["state"] == "done"


def test_a_replay_with_the_token_goes_through(operator, vonage, work, storage):
    vonage.status(samples.message_status("delivered"))
    work()
    response = operator.post("/ui/events/1/replay", data={"csrf_token": csrf(operator)})
    assert response.status_code == 302 and storage.reads.event(1)["state"] == "pending"
    assert "Event 1 is pending again" in operator.get("/ui/events/1").get_data(as_text=True)


def test_the_live_feed_poll_answers_401_once_logged_out(client):
    assert client.get("/ui/feed/rows?after=0").status_code == 401


@pytest.mark.parametrize("path", ["/ui/login", "/ui/", "/ui/static/console.js", "/ui/events/404", "/ui/health",
                                  "/ui/problems"])
def test_every_console_response_carries_the_strict_headers(operator, path):
    response = operator.get(path)
    response.close()
    for name, value in HEADERS.items():
        assert response.headers[name] == value, (path, name)


def test_the_pages_have_no_inline_script_or_style(operator):
    for path in ("/ui/", "/ui/problems", "/ui/health", "/ui/login"):
        html = operator.get(path).get_data(as_text=True)
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [] and "<style" not in html and " style=" not in html
        assert re.findall(r"\son[a-z]+=", html) == []


# -- development ------------------------------------------------------------------------------------
@pytest.fixture
def dev_app(make_app):
    return make_app(ADMIN_TOKEN=None, APP_ENV="development")


def test_development_generates_an_admin_token_once_mode_0600(dev_app, make_app):
    path = os.path.join(dev_app.instance_path, DEV_TOKEN_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as f:
        token = f.read().strip()
    assert len(token) >= 32 and dev_app.config["ADMIN_TOKEN"] == token
    assert make_app(ADMIN_TOKEN=None, APP_ENV="development").config["ADMIN_TOKEN"] == token


def test_production_generates_nothing(make_app):
    app = make_app(ADMIN_TOKEN=None)
    assert app.config["ADMIN_TOKEN"] is None
    assert not os.path.exists(os.path.join(app.instance_path, DEV_TOKEN_FILE))


def test_the_printed_development_url_logs_in_and_drops_the_token(dev_app):
    client = dev_app.test_client()
    response = client.get(f"/ui/login?token={dev_app.config['ADMIN_TOKEN']}")
    assert response.status_code == 302 and response.headers["Location"] == "/ui/"
    assert client.get("/ui/").status_code == 200
    assert dev_app.test_client().get("/ui/login?token=wrong").status_code == 401


def test_outside_development_a_token_in_the_url_does_not_log_in(client):
    response = client.get(f"/ui/login?token={ADMIN_TOKEN}")
    assert response.status_code == 200 and 'name="token"' in response.get_data(as_text=True)
    assert client.get("/ui/").status_code == 302
