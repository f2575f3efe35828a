"""Deploy files: nginx and systemd accept theirs, app.json and .env.example cover the settings, and the
commands in the Procfile and the systemd units start the app as written, on SQLite and PostgreSQL."""
import contextlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
import requests
import sqlalchemy
from sqlalchemy import inspect

from receiver.platform import config
from receiver.storage import engines, migrate, schema
from tests.conftest import ADMIN_TOKEN, SECRET
from tests.servers import BIN, ROOT, Child, Server, app_env, assert_ready, free_port, gunicorn, kill_group, wait_for

DEPLOY = ROOT / "deploy"
SITE = DEPLOY / "nginx-vonage-receiver.conf"
UNITS = ("vonage-receiver-web.service", "vonage-receiver-worker.service")
INSTALL_DIR = "/srv/vonage-receiver"
CERT_DIR = "/etc/letsencrypt/live/receiver.example.com"


# -- helpers -------------------------------------------------------------------------------------
def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in (line.partition(":") for line in lines) if command}


def unit_setting(unit: str, key: str) -> str:
    (value,) = re.findall(rf"^{key}=(.*)$", (DEPLOY / unit).read_text(), re.MULTILINE)
    return value


def unit_command(unit: str, key: str = "ExecStart", port: int | None = None) -> list[str]:
    """One of the unit's commands, pointed at this checkout (and at `port` instead of 3000)."""
    line = unit_setting(unit, key).replace(f"{INSTALL_DIR}/.venv/bin", str(BIN)).replace(INSTALL_DIR, str(ROOT))
    if port is not None:
        line = line.replace("127.0.0.1:3000", f"127.0.0.1:{port}")
    return shlex.split(line)


def process_env(database_url: str, **extra: str) -> dict:
    """What the Procfile's and the units' commands see: the settings, and this venv's tools on PATH."""
    return app_env(
        database_url,
        VONAGE_SIGNATURE_SECRET=SECRET,
        ADMIN_TOKEN=ADMIN_TOKEN,
        HOST="127.0.0.1",  # loopback only in tests; Heroku binds 0.0.0.0:$PORT
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    )


def worker_names(database_url: str) -> list[str]:
    engine = engines.make_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sqlalchemy.select(schema.workers.c.name)).scalars())
    finally:
        engine.dispose()






# -- configuration files -------------------------------------------------------------------------
def test_env_example_names_every_setting():
    named = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    gunicorn_settings = set(re.findall(r"os\.environ\.get\(\"([A-Z_]+)\"", (ROOT / "gunicorn.conf.py").read_text()))
    assert set(config.SETTINGS) | gunicorn_settings <= named


def test_env_example_documents_each_setting_once_with_a_comment():
    lines = (ROOT / ".env.example").read_text().splitlines()
    settings = [(i, m.group(1)) for i, line in enumerate(lines) if (m := re.match(r"^#?([A-Z][A-Z0-9_]*)=", line))]
    assert len({name for _, name in settings}) == len(settings)
    for i, name in settings:
        above = lines[i - 1]
        assert above.startswith("# ") and not re.match(r"^#?[A-Z][A-Z0-9_]*=", above), f"{name} has no comment"


def test_app_json_declares_what_a_heroku_deploy_needs():
    manifest = json.loads((ROOT / "app.json").read_text())
    env = manifest["env"]
    assert set(env) <= set(config.SETTINGS), "app.json names a variable the app does not read"
    # The app refuses to start in production without a signature secret.
    assert env["VONAGE_SIGNATURE_SECRET"].get("required", True) is True and "value" not in env["VONAGE_SIGNATURE_SECRET"]
    assert env["ADMIN_TOKEN"]["generator"] == "secret"
    assert env["WORKER_IN_WEB"]["value"] == "false" and manifest["formation"]["worker"]["quantity"] >= 1
    assert env["PROXY_FIX_HOPS"]["value"] == "1"
    assert all(spec["description"] for spec in env.values())
    assert {"plan": "heroku-postgresql"} in manifest["addons"]
    assert set(manifest["formation"]) <= set(procfile())


def test_python_version_matches_setup_cfg():
    version = (ROOT / ".python-version").read_text().strip()
    assert version == "3.11" and "python_requires = >=3.11" in (ROOT / "setup.cfg").read_text()


# -- nginx ---------------------------------------------------------------------------------------
@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1, in place of Let's Encrypt's files."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for nginx")
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(certs / "privkey.pem"), "-out", str(certs / "fullchain.pem")],
        check=True, capture_output=True, timeout=60,
    )
    return certs


def nginx_conf(tmp_path, site: str, *, foreground: bool = False):
    """The site inside a minimal nginx.conf whose files all live under tmp_path."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    (tmp_path / "site.conf").write_text(site)
    run = "daemon off;\nmaster_process off;\n" if foreground else ""
    (tmp_path / "nginx.conf").write_text(
        f"{run}pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log {tmp_path}/access.log;\n  client_body_temp_path {tmp_path}/body;\n"
        f"  proxy_temp_path {tmp_path}/proxy;\n  include {tmp_path}/site.conf;\n}}\n"
    )
    return [nginx, "-c", str(tmp_path / "nginx.conf"), "-p", f"{tmp_path}/", "-e", str(tmp_path / "error.log")]


@pytest.mark.slow
def test_nginx_accepts_the_site(tmp_path, certificate):
    site = SITE.read_text().replace(CERT_DIR, str(certificate))
    result = subprocess.run([*nginx_conf(tmp_path, site), "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr, result.stderr


@contextlib.contextmanager
def running_nginx(args: list[str], port: int, log):
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def accepting():
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        wait_for(accepting)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait(timeout=10)


def request_from(source: str, port: int, certificate, method: str, path: str, body: bytes = b"", headers=None):
    """One HTTPS request to nginx from the loopback address `source` (127.0.0.2 counts as another host)."""
    context = ssl.create_default_context(cafile=str(certificate / "fullchain.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, source_address=(source, 0), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_nginx_forwards_webhooks_and_keeps_operator_paths_local(tmp_path, certificate):
    env = process_env(f"sqlite:///{tmp_path / 'receiver.sqlite3'}", PROXY_FIX_HOPS="1")
    http_port, https_port = free_port(), free_port()
    with gunicorn(env, log_path=tmp_path / "gunicorn.log") as app_server:
        site = (
            SITE.read_text()
            .replace(CERT_DIR, str(certificate))
            .replace("127.0.0.1:3000", f"127.0.0.1:{app_server.port}")
            .replace("listen 80;", f"listen 127.0.0.1:{http_port};")
            .replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
        )
        site = re.sub(r"^\s*listen \[::\].*$", "", site, flags=re.MULTILINE)
        args = nginx_conf(tmp_path, site, foreground=True)
        with running_nginx(args, https_port, tmp_path / "error.log"):
            outside, local = "127.0.0.2", "127.0.0.1"
            assert request_from(outside, https_port, certificate, "GET", "/readyz")[0] == 200
            assert request_from(outside, https_port, certificate, "GET", "/")[0] == 404
            redirect = requests.get(f"http://127.0.0.1:{http_port}/readyz", allow_redirects=False, timeout=5)
            assert redirect.status_code == 301 and redirect.headers["Location"].startswith("https://")

            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            assert request_from(outside, https_port, certificate, "GET", "/api/events", headers=auth)[0] == 403
            assert request_from(outside, https_port, certificate, "GET", "/metrics")[0] == 403
            assert request_from(local, https_port, certificate, "GET", "/api/events", headers=auth)[0] == 200
            assert request_from(outside, https_port, certificate, "GET", "/ui/login")[0] == 403
            assert request_from(local, https_port, certificate, "GET", "/ui/login")[0] == 200

            too_big = b"x" * (1024 * 1024 + 1)
            assert request_from(outside, https_port, certificate, "POST", "/webhooks/inbound-message", too_big)[0] == 413

            # A forged callback claiming another address: the app logs the address nginx saw.
            status, _ = request_from(
                outside, https_port, certificate, "POST", "/webhooks/message-status", b"{}",
                headers={"Authorization": "Bearer not.a.token", "X-Forwarded-For": "203.0.113.9"},
            )
            assert status == 401
            # Each process writes its rejections once a second; this request may reach the other one.
            kept = wait_for(lambda: json.loads(request_from(local, https_port, certificate, "GET", "/api/rejections",
                                                            headers=auth)[1])["rejections"], timeout=5)
            assert [r["remote_addr"] for r in kept] == [outside]


# -- systemd -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in UNITS:
        # Point the paths at this checkout so the check that ExecStart is executable means something.
        source = (DEPLOY / unit).read_text().replace(f"{INSTALL_DIR}/.venv/bin", str(BIN))
        (tmp_path / unit).write_text(source.replace(INSTALL_DIR, str(ROOT)))
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / unit) for unit in UNITS)],
        capture_output=True, text=True, timeout=60,
    )
    # verify reports unknown keys and bad values on stderr but still exits 0.
    about_ours = [line for line in result.stderr.splitlines() if "vonage-receiver" in line]
    assert result.returncode == 0 and about_ours == [], result.stderr


def test_systemd_units_outlast_gunicorns_graceful_timeout():
    graceful = int(re.search(r"^graceful_timeout = (\d+)", (ROOT / "gunicorn.conf.py").read_text(), re.M).group(1))
    for unit in UNITS:
        assert unit_setting(unit, "KillSignal") == "SIGTERM"
        assert int(unit_setting(unit, "TimeoutStopSec")) > graceful


@pytest.mark.slow
def test_systemd_commands_migrate_then_run_web_without_worker_thread_and_worker_apart(tmp_path):
    url = f"sqlite:///{tmp_path / 'receiver.sqlite3'}"
    # As if /etc/vonage-receiver.env said WORKER_IN_WEB=true: the web unit's command line must win.
    env = process_env(url, WORKER_IN_WEB="true")
    migrated = subprocess.run(
        unit_command(UNITS[0], "ExecStartPre"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    port = free_port()
    web = Server(unit_command(UNITS[0], port=port), env, port=port, log_path=tmp_path / "web.log")
    with web:
        assert_ready(web.url)
        time.sleep(2)  # a worker thread would have written its heartbeat by now
        assert worker_names(url) == []

        worker = Child(unit_command(UNITS[1]), env).start()
        try:
            assert wait_for(lambda: worker_names(url))
        finally:
            # SIGTERM as systemd stops it, SIGKILL if it outlasts TimeoutStopSec (as systemd does too)
            assert worker.stop(signal.SIGTERM, timeout=int(unit_setting(UNITS[1], "TimeoutStopSec"))) == 0


# -- Procfile ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_procfile_release_then_web_as_written(empty_database_url, tmp_path):
    commands = procfile()
    env = process_env(empty_database_url)

    release = subprocess.run(
        shlex.split(commands["release"]), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert release.returncode == 0, release.stdout + release.stderr
    engine = engines.make_engine(empty_database_url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        assert set(schema.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()

    port = free_port()
    with Server(shlex.split(commands["web"]), dict(env, PORT=str(port)), port=port, log_path=tmp_path / "web.log") as web:
        assert_ready(web.url)
