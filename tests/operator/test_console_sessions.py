"""The console's server-side sessions: logout, expiry (absolute and idle) and token rotation end them,
whatever cookie a browser kept."""
import re

import pytest
from sqlalchemy import select, update

from devkit import samples
from receiver.storage.schema import operator_sessions
from tests.console_client import csrf, login


def cookie_of(client) -> str:
    return client.get_cookie("console_session", path="/ui").value


def with_cookie(app, value):
    """Another browser holding a copy of a cookie."""
    other = app.test_client()
    other.set_cookie("console_session", value, path="/ui")
    return other


def age(engine, **seconds):
    """Move every session's created_at / seen_at back by these many seconds."""
    with engine.begin() as conn:
        conn.execute(update(operator_sessions).values(
            **{column: getattr(operator_sessions.c, column) - back for column, back in seconds.items()}))


def test_a_cookie_kept_from_before_logout_opens_nothing(app, operator, vonage, work, storage):
    vonage.status(samples.message_status("delivered"))
    work()
    kept, token = cookie_of(operator), csrf(operator)
    operator.post("/ui/logout", data={"csrf_token": token})
    thief = with_cookie(app, kept)
    assert thief.get("/ui/").status_code == 302
    assert thief.get("/ui/events/1").status_code == 302
    replay = thief.post("/ui/events/1/replay", data={"csrf_token": token})
    assert replay.status_code == 302 and replay.headers["Location"].startswith("/ui/login")
    assert storage.reads.event(1)["state"] == "done"


def test_a_session_ends_after_session_hours_however_busy(make_app):
    app = make_app(SESSION_HOURS=2.0)
    client = app.test_client()
    login(client)
    age(app.extensions["storage"].engine, created_at=1.9 * 3600)
    assert client.get("/ui/").status_code == 200
    age(app.extensions["storage"].engine, created_at=0.2 * 3600)
    assert client.get("/ui/").status_code == 302


def test_a_session_ends_after_an_hour_idle(app, operator, engine):
    age(engine, seen_at=59 * 60)
    assert operator.get("/ui/").status_code == 200  # seen now: an hour more
    age(engine, seen_at=59 * 60)
    assert operator.get("/ui/health").status_code == 200
    age(engine, seen_at=61 * 60)
    assert operator.get("/ui/").status_code == 302
    with engine.connect() as conn:
        assert conn.execute(select(operator_sessions)).first() is None  # and its record is gone


def test_the_live_feed_poll_does_not_keep_a_session_alive(app, operator, engine):
    age(engine, seen_at=59 * 60)
    assert operator.get("/ui/feed/rows?after=0").status_code == 200
    age(engine, seen_at=2 * 60)
    assert operator.get("/ui/feed/rows?after=0").status_code == 401


def test_rotating_admin_token_ends_every_session_even_with_the_same_cookie_key(app, operator, engine):
    kept = cookie_of(operator)
    app.config["ADMIN_TOKEN"] = "another-admin-token-Zp4Qw7Rt1Yx"
    login(app.test_client(), "another-admin-token-Zp4Qw7Rt1Yx")
    with engine.connect() as conn:
        assert len(conn.execute(select(operator_sessions)).all()) == 1  # the old one is deleted at the next login
    assert with_cookie(app, kept).get("/ui/").status_code == 302


def test_the_database_holds_no_session_id(app, operator, engine):
    html = operator.get("/ui/").get_data(as_text=True)
    with engine.connect() as conn:
        row = conn.execute(select(operator_sessions)).one()
    assert len(row.id_hash) == 64 and row.id_hash not in cookie_of(operator)
    assert re.search(r"signed in since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", html)


@pytest.mark.parametrize("sid", [None, "", 7, ["x"], "not-a-session"])
def test_a_signed_cookie_with_no_session_behind_it_opens_nothing(app, sid):
    client = app.test_client()
    with client.session_transaction("/ui/") as cookie:
        if sid is not None:
            cookie["sid"] = sid
        cookie["operator"] = True  # what the console's cookie said before sessions were recorded
    assert client.get("/ui/").status_code == 302
