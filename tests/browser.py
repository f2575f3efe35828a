"""A real browser for the console's tests: Debian's headless Chromium driven by Selenium, the app served
on loopback in a thread, and the README's screenshots.

    python -m tests.browser --screenshots docs/    # docs/console-feed.png, docs/console-message.png

Nothing is downloaded: Selenium is pointed at /usr/bin/chromedriver, so Selenium Manager never runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from werkzeug.serving import make_server

from app import create_app
from devkit import samples
from receiver.operator.signed import send_signed
from receiver.storage import get_storage
from receiver.worker.loop import Worker
from tests.conftest import ADMIN_TOKEN, API_KEY, SECRET, SMS_METHOD, base_config
from tests.servers import wait_for

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
SIZE = (1200, 700)


def missing_browser() -> str | None:
    """Why no browser test can run here (None when they can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(path)):
            return f"{path} is not installed (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    return None


@contextmanager
def chromium():
    """A fresh headless Chromium (own profile) that logs every network request it makes."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={SIZE[0]},{SIZE[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        # The page area exactly SIZE, whatever the window decorations would take.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": SIZE[0], "height": SIZE[1], "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class LiveServer:
    """The app on 127.0.0.1:<free port> with a real SQLite file, served by werkzeug's threaded server.

    With WORKER_IN_WEB=True the app's own worker thread processes callbacks as in production
    (`settle()` waits for it); otherwise `work()` runs the worker here.
    """

    def __init__(self, directory: Path, **settings):
        directory.mkdir(parents=True, exist_ok=True)
        config = base_config(f"sqlite:///{directory / 'receiver.sqlite3'}", directory / "instance")
        self.app = create_app({**config, **settings})
        self.storage = get_storage(self.app)
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="console-live-server", daemon=True)

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        supervisor = self.app.extensions.get("supervisor")
        if supervisor is not None:
            supervisor.worker.stop()
            supervisor.thread.join(timeout=10)
        self.app.extensions["traffic"].stop()
        self.storage.dispose()

    def send(self, kind: str, payload: dict, via: str = "json"):
        """One callback over HTTP, signed as Vonage signs it."""
        sent = send_signed(kind, payload, self.url, SECRET, API_KEY, SMS_METHOD, via)
        assert sent.ok, sent
        return sent

    def work(self) -> int:
        """Run the worker until nothing is due."""
        return Worker(self.storage, self.app.config, name="browser-test-worker").run_until_idle()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the app's worker thread has finished everything stored."""
        wait_for(lambda: self.storage.stats.queue_figures().backlog == 0, timeout)


def log_in(driver, server: LiveServer, token: str = ADMIN_TOKEN) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(server.url + "/ui/login")
    driver.find_element(By.NAME, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(lambda: driver.current_url.rstrip("/").endswith("/ui"))


def requested_urls(driver) -> list[str]:
    """Every URL the browser asked for since the last call (Chrome's performance log)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


# -- sample traffic and screenshots ------------------------------------------------------------------
def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def conversation(server: LiveServer, channel: str, customer: str, reply: str | None, *, late: bool = False) -> str:
    """One sent message's statuses (optionally with `delivered` arriving after `read`) and a reply."""
    sent_at = datetime.now(timezone.utc) - timedelta(seconds=40)
    first = samples.message_status("submitted", channel, to=customer, timestamp=_stamp(sent_at))
    same = {name: first[name] for name in ("message_uuid", "to", "from", "client_ref")}
    later = ["delivered", "read"] if channel in ("whatsapp", "viber_service", "rcs") else ["delivered"]
    statuses = [first] + [samples.message_status(status, channel, timestamp=_stamp(sent_at + timedelta(seconds=4 + 9 * i)),
                                                 **same) for i, status in enumerate(later)]
    if late and len(statuses) == 3:
        statuses[1], statuses[2] = statuses[2], statuses[1]
    for status in statuses:
        server.send("message-status", status)
    if reply:
        server.send("inbound-message", samples.inbound_message(channel, text=reply, to=same["from"], from_=customer))
    return first["message_uuid"]


def sample_traffic(server: LiveServer) -> str:
    """A realistic few minutes of an account's callbacks; returns the message to show the timeline of."""
    conversation(server, "sms", "447700900318", "Yes please, Tuesday works")
    server.send("delivery-receipt", samples.delivery_receipt("delivered"), via="get")
    shown = conversation(server, "whatsapp", "447700900542", "Great, thanks! Can I pick it up at 5?", late=True)
    server.send("inbound-sms", samples.inbound_sms("STOP"), via="form")
    conversation(server, "viber_service", "447700900671", None)
    server.send("message-status", samples.message_status("rejected", "whatsapp", to="447700900999"))
    server.work()
    conversation(server, "rcs", "447700900204", None)  # just arrived: still pending
    return shown


def screenshots(out_dir: str | Path) -> list[Path]:
    """Serve sample traffic, and save PNGs of the feed and of one message's timeline into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, LiveServer(Path(tmp)) as server, chromium() as driver:
        message_id = sample_traffic(server)
        server.app.extensions["traffic"].flush()
        log_in(driver, server)
        saved = []
        for name, path in (("console-feed.png", "/ui/"), ("console-message.png", f"/ui/messages/{message_id}")):
            driver.get(server.url + path)
            time.sleep(0.3)
            target = out / name
            target.write_bytes(small_png(driver.get_screenshot_as_png()))
            saved.append(target)
        return saved


def small_png(png: bytes) -> bytes:
    """The screenshot with a 64-colour palette: text and flat colours survive, the file is a third the size."""
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.open(BytesIO(png)).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(
        out, format="PNG", optimize=True)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", metavar="DIR", required=True, help="where to write the PNGs")
    reason = missing_browser()
    if reason:
        raise SystemExit(reason)
    for path in screenshots(parser.parse_args().screenshots):
        print(f"{path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
