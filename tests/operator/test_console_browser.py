"""The console in headless Chromium against the app served on loopback (real HTTP, a real SQLite file):
login, the live feed, the event and message pages, hostile text, replay from the problems page, CSRF,
and nothing loaded from anywhere else. Skipped when no browser is installed, unless REQUIRE_BROWSER is set."""
import os
from urllib.parse import urlsplit

import pytest

import handlers.status
from devkit import samples
from tests.browser import LiveServer, chromium, log_in, missing_browser, requested_urls, wait_for

REASON = missing_browser()
# CI sets REQUIRE_BROWSER: there a missing browser fails these tests instead of skipping them.
# Every test here drives a browser process: all slow.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(REASON is not None and not os.environ.get("REQUIRE_BROWSER"), reason=REASON or "")]

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("console-browser"), WORKER_IN_WEB=True) as live:
        yield live


@pytest.fixture(scope="module")
def driver():
    if REASON:
        pytest.fail(REASON + " (REQUIRE_BROWSER is set)")
    with chromium() as browser:
        yield browser


@pytest.fixture
def browser(driver, server):
    log_in(driver, server)
    requested_urls(driver)  # start each test with an empty request log
    return driver


def css(driver, selector):
    return driver.find_elements("css selector", selector)


def test_login_and_logout(driver, server):
    driver.delete_all_cookies()
    driver.get(server.url + "/ui/problems")
    assert urlsplit(driver.current_url).path == "/ui/login"
    css(driver, "input[name=token]")[0].send_keys("not the token")
    css(driver, "form.login button")[0].click()
    wait_for(lambda: css(driver, "p.error"))
    assert "not this deployment's ADMIN_TOKEN" in css(driver, "p.error")[0].text
    log_in(driver, server)
    css(driver, "form.logout button")[0].click()
    wait_for(lambda: urlsplit(driver.current_url).path == "/ui/login")
    driver.get(server.url + "/ui/")
    assert urlsplit(driver.current_url).path == "/ui/login"


def newer_rows(driver, than: int) -> list[str]:
    return [row.text for row in css(driver, "#feed-rows tr[data-id]") if int(row.get_attribute("data-id")) > than]


def test_a_conversation_appears_in_the_feed_without_a_reload(browser, server):
    browser.get(server.url + "/ui/")
    browser.execute_script("window.__same_page = true")
    newest = int(browser.find_element("id", "feed-rows").get_attribute("data-newest"))
    submitted = samples.message_status("submitted", "whatsapp")
    same = {name: submitted[name] for name in ("message_uuid", "to", "from", "client_ref")}
    server.send("message-status", submitted)
    server.send("message-status", samples.message_status("read", "whatsapp", **same))
    server.send("inbound-message", samples.inbound_message("whatsapp", text="On my way", to=same["from"],
                                                           from_=same["to"]))
    rows = wait_for(lambda: len(newer_rows(browser, newest)) == 3 and newer_rows(browser, newest))
    assert "inbound-message" in rows[0] and "read" in rows[1] and "submitted" in rows[2]
    assert browser.execute_script("return window.__same_page") is True  # updated in place, never reloaded
    assert any(url.startswith(server.url + "/ui/feed/rows?after=") for url in requested_urls(browser))


def test_the_event_page_shows_the_body(browser, server):
    payload = samples.message_status("delivered", "sms", client_ref="order-77001")
    server.send("message-status", payload)
    browser.get(server.url + "/ui/")
    css(browser, f'#feed-rows a[href="/ui/events/{_event_of(server, payload)}"]')[0].click()
    body = wait_for(lambda: css(browser, "pre#body"))[0].text
    assert '"client_ref": "order-77001"' in body and payload["message_uuid"] in body
    assert "curl -sS -i -X POST" in browser.find_element("id", "curl").text


def test_the_message_page_shows_the_statuses_in_order(browser, server):
    submitted = samples.message_status("submitted", "whatsapp", timestamp="2026-12-01T09:00:00.000Z")
    same = {name: submitted[name] for name in ("message_uuid", "to", "from", "client_ref")}
    server.send("message-status", submitted)
    server.send("message-status", samples.message_status("read", "whatsapp", timestamp="2026-12-01T09:00:30.000Z", **same))
    server.send("message-status", samples.message_status("delivered", "whatsapp", timestamp="2026-12-01T09:00:05.000Z",
                                                         **same))
    server.settle()
    browser.get(server.url + f"/ui/messages/{same['message_uuid']}")
    rows = [row.text for row in css(browser, "table.timeline tbody tr")]
    assert [row.split()[0] for row in rows] == ["submitted", "delivered", "read"]
    assert "superseded" in rows[1] and "late" in rows[1]


def test_hostile_text_is_shown_as_text_and_runs_nothing(browser, server):
    inbound = samples.inbound_message("whatsapp", text=HOSTILE, profile={"name": HOSTILE})
    server.send("inbound-message", inbound)
    server.settle()
    browser.get(server.url + "/ui/")
    assert HOSTILE in browser.find_element("id", "feed-rows").text
    browser.get(server.url + f"/ui/messages/{inbound['message_uuid']}")
    assert browser.find_element("id", "message-text").text == HOSTILE
    browser.get(server.url + f"/ui/events/{_event_of(server, inbound)}")
    body = browser.find_element("id", "body").text
    assert body.count(HOSTILE.replace('"', '\\"')) == 2  # the text and the profile name, in the JSON as received
    for path in ("/ui/", f"/ui/messages/{inbound['message_uuid']}", f"/ui/events/{_event_of(server, inbound)}"):
        browser.get(server.url + path)
        assert browser.execute_script("return typeof window.__pwned") == "undefined", path
        assert css(browser, "main img") == [] and len(css(browser, "script")) == 1, path


def _event_of(server, payload):
    (found,) = server.storage.reads.events(message_id=payload["message_uuid"])
    return found["id"]


def test_a_dead_event_replayed_from_the_problems_page_is_processed(browser, server, monkeypatch):
    def crm_down(event, *args):
        raise RuntimeError("CRM is down")

    monkeypatch.setattr(handlers.status, "_log", crm_down)
    payload = samples.message_status("undeliverable", "sms")
    server.send("message-status", payload)
    event_id = _event_of(server, payload)
    wait_for(lambda: server.storage.reads.event(event_id)["state"] == "dead")  # RETRY_BASE_SECONDS=0: retried at once
    monkeypatch.undo()  # the CRM is back

    browser.get(server.url + "/ui/problems")
    assert "RuntimeError in on_undeliverable" in browser.page_source
    css(browser, f'button[data-event="{event_id}"]')[0].click()
    wait_for(lambda: "is pending again" in browser.page_source)
    wait_for(lambda: server.storage.reads.event(event_id)["state"] == "done")
    assert server.storage.reads.event(event_id)["attempts"] == 1


def test_a_replay_without_the_csrf_token_is_refused(browser, server):
    payload = samples.message_status("delivered", "sms")
    server.send("message-status", payload)
    server.settle()
    event_id = _event_of(server, payload)
    browser.get(server.url + f"/ui/events/{event_id}")
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/ui/events/{event_id}/replay', {{method: 'POST', credentials: 'same-origin'}})"
        ".then(r => done(r.status));")
    assert status == 403
    browser.execute_script("document.querySelector('.actions input[name=csrf_token]').remove()")
    css(browser, ".actions button")[0].click()
    wait_for(lambda: "reload the page" in browser.page_source)
    assert server.storage.reads.event(event_id)["state"] == "done"


def test_no_console_asset_comes_from_outside_the_app(browser, server):
    server.send("message-status", samples.message_status("delivered", "whatsapp"))
    server.settle()
    (newest,) = server.storage.reads.events(limit=1)
    pages = ["/ui/", "/ui/problems", "/ui/health", f"/ui/events/{newest['id']}", f"/ui/messages/{newest['message_id']}"]
    browser.get_log("browser")
    for path in pages:
        browser.get(server.url + path)
        linked = browser.execute_script(
            "return Array.from(document.querySelectorAll('[src], link[href]')).map(e => e.src || e.href)")
        assert all(url.startswith((server.url + "/", "data:")) for url in linked), linked
    blocked = [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]
    assert blocked == []  # the pages need nothing the policy forbids
    browser.delete_all_cookies()
    browser.get(server.url + "/ui/login")
    fetched = requested_urls(browser)
    assert fetched and all(url.startswith((server.url + "/", "data:")) for url in fetched), fetched
    assert {urlsplit(url).path for url in fetched} >= {"/ui/static/console.css", "/ui/static/console.js"}


def test_the_readme_screenshots_are_small(tmp_path):
    from PIL import Image

    from tests.browser import SIZE, screenshots

    for path in screenshots(tmp_path):
        with Image.open(path) as image:
            assert image.size == SIZE, path
        assert path.stat().st_size < 150_000, path
