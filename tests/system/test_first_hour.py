"""The first hour without traps: every mistake a new user can make at start is refused in one line that
names the setting (in each of the three ways the app starts), and `dev.py` reloads, reads .env, honours
PORT, repairs its venv and sends through the local simulator. Tests start real processes where the
behaviour is about processes."""
from __future__ import annotations

import datetime
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
import requests

import dev
from receiver.platform import config, logs
from receiver.platform.config import ConfigError
from receiver.webhooks import guard
from tests import servers
from tests.conftest import PG_URL, SECRET
from tests.servers import BIN, ROOT, app_env, assert_ready, free_port, gunicorn, kill_group, wait_for

# -- helpers -------------------------------------------------------------------------------------
# What each process sees: none of this machine's settings, so only the test's own count.
OURS = set(config.SETTINGS) | set(config.SERVER_SETTINGS) | {"DYNO", "HOST"}


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OURS and not k.startswith(("FLASK_", "VONAGE_"))}
    return dict(env, PYTHONUNBUFFERED="1", **extra)


def run(args: list[str], env: dict, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    """The command's output; past `timeout`, it and every process it started are killed (tests/servers.py)."""
    return servers.run(args, cwd=cwd, env=env, timeout=timeout)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error: ")]


def assert_one_line_error(result: subprocess.CompletedProcess, names: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    (line,) = error_lines(output)
    assert names in line, output


# -- start errors: one line naming the setting, in each way the app starts ------------------------
@pytest.mark.parametrize("name, value, expected", [
    ("MAX_ATTEMPTS", "five", "a whole number"),
    ("RETRY_BASE_SECONDS", "soon", "a number"),
    ("WORKER_IN_WEB", "flase", "true or false"),
    ("LOG_FORMAT", "xml", "one of json, text"),
    ("LOG_LEVEL", "verbose", "one of debug, info, warning, error, critical"),
    # gunicorn reads it as it is imported, before gunicorn.conf.py: the release step catches it
    ("WEB_CONCURRENCY", "two", "a whole number"),
])
def test_a_setting_that_does_not_parse_is_named_with_what_it_expects(name, value, expected):
    with pytest.raises(ConfigError) as raised:
        config.from_env({name: value})
    assert raised.value.format_message() == f"{name}={value!r}: expected {expected}"
    assert raised.value.exit_code == 2


@pytest.mark.slow
def test_the_flask_cli_prints_a_start_error_as_one_line_without_traceback(tmp_path):
    result = run([str(BIN / "flask"), "--app", "app", "init-db"],
                 clean_env(MAX_ATTEMPTS="five", INSTANCE_PATH=str(tmp_path), VONAGE_SIGNATURE_SECRET=SECRET))
    assert_one_line_error(result, "MAX_ATTEMPTS='five': expected a whole number")


START_ERRORS = {  # extra settings -> what the one line must say
    "unparsable": ({"MAX_ATTEMPTS": "five"}, "MAX_ATTEMPTS='five'"),
    "verification mode": ({"SIGNATURE_VERIFICATION": "maybe"}, "SIGNATURE_VERIFICATION='maybe': use one of"),
    "sms method": ({"VONAGE_SIGNATURE_METHOD": "sha384"}, "VONAGE_SIGNATURE_METHOD='sha384': use one of"),
    "malformed secrets": ({"VONAGE_SIGNATURE_SECRETS": "k1"}, "VONAGE_SIGNATURE_SECRETS entry 1"),
    "private key": ({"VONAGE_PRIVATE_KEY": "not a key", "VONAGE_APPLICATION_ID": "app-1"},
                    "VONAGE_PRIVATE_KEY is not a PEM private key"),
    "no secret": ({"VONAGE_SIGNATURE_SECRET": ""}, "VONAGE_SIGNATURE_SECRET is not set"),
    "weak secret": ({"VONAGE_SIGNATURE_SECRET": "changeme"}, "VONAGE_SIGNATURE_SECRET is shorter than 16"),
    "heroku sqlite": ({"DYNO": "web.1"}, "heroku addons:create heroku-postgresql"),
}
DEVELOPMENT_ALLOWS = {"no secret", "weak secret", "heroku sqlite"}


def production_env(tmp_path, settings: dict) -> dict:
    return clean_env(**{"INSTANCE_PATH": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite3'}",
                        "VONAGE_SIGNATURE_SECRET": SECRET, **settings})


@pytest.mark.slow
@pytest.mark.parametrize("case", START_ERRORS)
def test_start_errors_are_one_line_from_flask_and_gunicorn(tmp_path, case):
    settings, says = START_ERRORS[case]
    env = production_env(tmp_path, settings)
    assert_one_line_error(run([str(BIN / "flask"), "--app", "app", "init-db"], env), says)
    # gunicorn builds the app once before forking: the same line, exit 2, no worker boots.
    served = run([str(BIN / "gunicorn"), "app:create_app()"], dict(env, PORT=str(free_port()), HOST="127.0.0.1"))
    assert_one_line_error(served, says)
    assert "Booting worker" not in served.stdout + served.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name, value, says", [
    ("WEB_THREADS", "x", "WEB_THREADS='x': expected a whole number of 1 or more"),
    ("PORT", "abc", "PORT='abc': expected a whole number from 1 to 65535"),
    ("GUNICORN_TIMEOUT", "-1", "GUNICORN_TIMEOUT='-1': expected a whole number of 0 or more"),
])
def test_gunicorn_conf_names_a_bad_number(tmp_path, name, value, says):
    result = run([str(BIN / "gunicorn"), "app:create_app()"], production_env(tmp_path, {name: value}))
    assert_one_line_error(result, says)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_gunicorns_check_leaves_nothing_open_in_the_master(tmp_path):
    database = tmp_path / "r.sqlite3"
    env = production_env(tmp_path, {"DATABASE_URL": f"sqlite:///{database}"})
    with gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log") as server:
        assert_ready(server.url)
        assert database.exists()  # the check built the app (and migrated) before the worker did
        master = Path(f"/proc/{server.pid}/fd")
        opened = [os.readlink(fd) for fd in master.iterdir() if fd.name.isdigit()]
    assert not [path for path in opened if path.startswith(str(database))], opened


# -- a wrong DATABASE_URL says why ----------------------------------------------------------------
def test_a_database_that_is_down_still_lets_the_web_process_start_and_says_why(make_app, caplog):
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/receiver"  # nothing listens there
    app = make_app(DATABASE_URL=url)
    (line,) = [r.getMessage() for r in caplog.records if "database unreachable" in r.getMessage()]
    assert "DATABASE_URL (postgresql+psycopg://postgres:***@127.0.0.1:" in line and "Connection refused" in line
    assert "hunter2" not in caplog.text
    assert app.test_client().get("/readyz").status_code == 503  # an outage: 503 until it is back
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 2 and "hunter2" not in result.output
    assert result.output.startswith("Error: DATABASE_URL (postgresql+psycopg://postgres:***@127.0.0.1:")


@pytest.mark.postgres
@pytest.mark.parametrize("where, says", [
    ("postgres:hunter2@{host}/nosuchdb", 'database "nosuchdb" does not exist'),
    ("nobody@{host}/test", 'role "nobody" does not exist'),
])
def test_a_database_that_refuses_stops_the_start_naming_its_own_reason(make_app, pg_server, where, says):
    # It answered and refused: no outage to wait out, so not a web process answering every callback 503.
    host = PG_URL.split("@", 1)[1].split("/", 1)[0]
    with pytest.raises(ConfigError) as stopped:
        make_app(DATABASE_URL="postgresql://" + where.format(host=host))
    assert stopped.value.exit_code == 2
    assert stopped.value.message.startswith("DATABASE_URL (postgresql+psycopg://") and stopped.value.message.endswith(
        f"): {says}")
    assert "hunter2" not in stopped.value.message


def test_a_sqlite_folder_that_cannot_be_created_is_a_start_error(make_app, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"^DATABASE_URL: cannot create the folder .*a-file/sub"):
        make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'a-file' / 'sub' / 'r.sqlite3'}")


@pytest.mark.parametrize("url", ["mysql://me:hunter2@db.example/receiver", "not a url with hunter2"])
def test_a_database_url_this_app_cannot_use_is_a_start_error_that_hides_it(make_app, url):
    with pytest.raises(ConfigError, match="DATABASE_URL is not a database URL") as raised:
        make_app(DATABASE_URL=url)
    assert "hunter2" not in raised.value.format_message()


# -- Heroku without PostgreSQL --------------------------------------------------------------------
def test_heroku_with_sqlite_refuses_to_start(make_app, monkeypatch):
    monkeypatch.setenv("DYNO", "web.1")
    with pytest.raises(ConfigError, match=r"heroku addons:create heroku-postgresql.*sets DATABASE_URL"):
        make_app()


def test_heroku_with_postgres_or_in_development_starts(make_app, monkeypatch):
    monkeypatch.setenv("DYNO", "web.1")
    config.refuse_ephemeral_database({"DATABASE_URL": "postgres://u:p@h/d", "APP_ENV": "production"})
    assert make_app(APP_ENV="development")


def doctor_levels(app) -> dict[str, str]:
    result = app.test_cli_runner().invoke(args=["vonage", "doctor"])
    return {line[6:28].strip(): line[:4].strip() for line in result.output.splitlines()
            if line[:4].strip() in ("OK", "WARN", "FAIL", "SKIP")} | {"_output": result.output}


def test_doctor_fails_sqlite_on_heroku(make_app, monkeypatch):
    app = make_app(APP_ENV="development")
    monkeypatch.setenv("DYNO", "web.1")
    levels = doctor_levels(app)
    assert levels["database file"] == "FAIL" and "heroku addons:create heroku-postgresql" in levels["_output"]


def test_doctor_warns_of_sqlite_outside_development(make_app):
    levels = doctor_levels(make_app())
    assert levels["database file"] == "WARN"
    assert "persistent storage" in levels["_output"] and "only this machine" in levels["_output"]
    assert doctor_levels(make_app(APP_ENV="development"))["database file"] == "OK"


# -- weak secrets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, says", [
    ({"VONAGE_SIGNATURE_SECRET": "x"}, "VONAGE_SIGNATURE_SECRET is shorter than 16 characters"),
    ({"VONAGE_SIGNATURE_SECRET": "YOUR_SIGNATURE_SECRET"}, "VONAGE_SIGNATURE_SECRET is an example value"),
    ({"VONAGE_SIGNATURE_SECRET": "qwertyuiopasdfghjklzxcvbnm123456"}, "an example value"),  # Vonage's SDK tests
    ({"VONAGE_SIGNATURE_SECRET": f"{SECRET},changeme"},
     "the previous secret in VONAGE_SIGNATURE_SECRET is shorter"),
    ({"VONAGE_SIGNATURE_SECRET": None, "VONAGE_SIGNATURE_SECRETS": f"k1={SECRET};k2=changeme"},
     "VONAGE_SIGNATURE_SECRETS (api key k2) is shorter"),
])
def test_weak_secrets_are_refused_outside_development_without_showing_them(make_app, settings, says):
    with pytest.raises(ConfigError, match=re.escape(says)) as raised:
        make_app(**settings)
    message = raised.value.format_message()
    assert "Vonage dashboard" in message
    assert not {"changeme", "YOUR_SIGNATURE_SECRET", "qwertyuiop"} & set(re.findall(r"[\w]+", message))


def test_development_may_use_a_weak_secret(make_app):
    assert make_app(APP_ENV="development", VONAGE_SIGNATURE_SECRET="x")


def test_the_test_suites_own_secret_passes_the_floor():
    assert guard.weakness(SECRET) is None


def test_doctor_and_the_start_check_share_one_floor(make_app, monkeypatch):
    app = make_app(APP_ENV="development")  # where doctor, not the start, is the one to say it
    monkeypatch.setattr(guard, "MIN_SECRET_LENGTH", len(SECRET) + 1)
    levels = doctor_levels(app)
    assert levels["signature secret"] == "FAIL" and f"shorter than {len(SECRET) + 1}" in levels["_output"]
    with pytest.raises(ConfigError, match="shorter than"):
        make_app()


# -- no SMS text in the logs ----------------------------------------------------------------------
def test_werkzeug_request_lines_lose_their_query(app, caplog):
    from werkzeug.serving import WSGIRequestHandler

    handler = WSGIRequestHandler.__new__(WSGIRequestHandler)
    handler.client_address, handler.command, handler.request_version = ("127.0.0.1", 5000), "GET", "HTTP/1.1"
    handler.path = "/webhooks/inbound-sms?msisdn=447700900123&text=meet%20me%20at%20locker%207731"
    handler.requestline = f"GET {handler.path} HTTP/1.1"
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        handler.log_request(200, 2)
        handler.log_request(401, 2)  # coloured lines too
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert len(lines) == 2 and all("/webhooks/inbound-sms" in line for line in lines)
    assert not any("7731" in line or "447700900123" in line for line in lines)
    assert logs._without_query("GET /p?text=a b HTTP/1.1") == "GET /p HTTP/1.1"


def test_gunicorns_access_log_format_has_the_path_without_the_query():
    from gunicorn.glogging import Logger

    namespace = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), namespace)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/webhooks/inbound-sms?text=locker%207731",
               "PATH_INFO": "/webhooks/inbound-sms", "QUERY_STRING": "text=locker%207731",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
    response = type("Response", (), {"status": "200 OK", "response_length": 2, "headers": (), "sent": 2})()
    request = type("Request", (), {"headers": ()})()
    atoms = Logger.atoms(Logger.__new__(Logger), response, request, environ, datetime.timedelta(0))
    line = namespace["access_log_format"] % atoms
    assert '"GET /webhooks/inbound-sms HTTP/1.1" 200' in line and "7731" not in line


@pytest.mark.slow
def test_gunicorns_access_log_keeps_sms_text_out(tmp_path):
    env = dict(app_env(f"sqlite:///{tmp_path / 'r.sqlite3'}", VONAGE_SIGNATURE_SECRET=SECRET,
                       INSTANCE_PATH=str(tmp_path)), GUNICORN_ACCESS_LOG="-")
    with gunicorn(env, workers=1, log_path=tmp_path / "gunicorn.log") as server:
        requests.get(server.url + "/webhooks/inbound-sms?msisdn=447700900123&text=locker+7731", timeout=5)
        wait_for(lambda: "GET /webhooks/inbound-sms HTTP/1.1" in server.log_tail())
    assert "7731" not in (tmp_path / "gunicorn.log").read_text()


# -- dev.py ---------------------------------------------------------------------------------------
def port_pair() -> int:
    """A free port whose next port is free too (dev.py serve puts the simulator on PORT+1)."""
    for _ in range(50):
        port = free_port()
        if not dev.listening(port + 1) and port < 65534:
            return port
    raise AssertionError("no two free ports in a row")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the project (no .git, no instance/, no developer's .env) using this checkout's .venv,
    so `dev.py` runs as from a fresh clone, with files of its own to edit."""
    if not dev.installed_stamp().exists():
        pytest.skip(f"{dev.VENV} is not installed for the current requirements: run `python3 dev.py test` once")
    copy = tmp_path_factory.mktemp("checkout") / "receiver"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "instance", ".env", "__pycache__", ".pytest_cache", ".hypothesis", "bench"))
    os.symlink(dev.VENV, copy / ".venv")
    return copy


def dev_py(checkout: Path, *args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return run([sys.executable, str(checkout / "dev.py"), *args], env, cwd=checkout, timeout=timeout)


class DevServe:
    """`python3 dev.py serve` in a checkout, in its own process group, its output in a file."""

    def __init__(self, checkout: Path, env: dict, port: int):
        self.checkout, self.env, self.port = checkout, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = checkout / f"serve-{port}.log"

    def __enter__(self):
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(self.checkout / "dev.py"), "serve"], cwd=self.checkout,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._ready, timeout=60)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _ready(self):
        assert self.proc.poll() is None, self.output()
        try:
            return requests.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __exit__(self, *exc):
        # dev.py, the flask server and its reloader, the simulator: whichever are still running.
        kill_group(self.proc.pid)
        self.proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(set(START_ERRORS) - DEVELOPMENT_ALLOWS))
def test_start_errors_are_one_line_from_dev_serve(checkout, case):
    settings, says = START_ERRORS[case]
    result = dev_py(checkout, "serve", env=clean_env(PORT=str(port_pair()), **settings))
    assert_one_line_error(result, says)


def test_dev_serve_runs_flask_with_the_reloader_but_not_the_debugger():
    command = dev.serve_command(4000, ["--host", "0.0.0.0"])
    assert command[1:] == ["--app", "devkit.devserver", "run", "--port", "4000", "--reload", "--no-debugger", "--host",
                           "0.0.0.0"]
    assert dev.RELOADING == " * Reloading on changes to handlers/ and schemas/"


def test_dev_test_runs_everything_and_with_quick_the_fast_loop():
    from hypothesis import settings

    env = {}
    assert dev.test_command(["-p", "no:cacheprovider"], env)[1:] == ["-m", "pytest", "-p", "no:cacheprovider"]
    assert env == {}  # the full run: every test, each property at its own count
    quick = dev.test_command(["tests/webhooks", "--quick", "-x"], env)
    assert quick[1:] == ["-m", "pytest", "-m", "not slow", "tests/webhooks", "-x"]
    assert env == {"HYPOTHESIS_PROFILE": "quick"}
    assert settings.get_profile("quick").max_examples < settings.get_profile("default").max_examples


def test_dotenv_lines(tmp_path):
    (tmp_path / ".env").write_text(
        "# a comment\n\nPORT=4000\nexport LOG_LEVEL=debug\nAUTO_REPLY_TEXT=\"Thanks # we got it\"\n"
        "ADMIN_TOKEN='quoted'\nMETRICS_TOKEN=plain # trailing comment\nVONAGE_API_KEY=\n")
    assert dev.read_dotenv(tmp_path / ".env") == {
        "PORT": "4000", "LOG_LEVEL": "debug", "AUTO_REPLY_TEXT": "Thanks # we got it", "ADMIN_TOKEN": "quoted",
        "METRICS_TOKEN": "plain", "VONAGE_API_KEY": ""}
    assert dev.read_dotenv(tmp_path / "missing") == {}


def test_a_dotenv_line_that_is_not_a_setting_stops_dev_py(tmp_path):
    (tmp_path / ".env").write_text("PORT=4000\nthis is not a setting\n")
    with pytest.raises(SystemExit, match="Error: .env line 2 is not KEY=value"):
        dev.read_dotenv(tmp_path / ".env")


def test_trigger_posts_to_port_by_default(app):
    runner = app.test_cli_runner()
    printed = runner.invoke(args=["vonage", "trigger", "status", "--print"], env={"PORT": "4123"})
    assert printed.exit_code == 0, printed.output
    assert "http://127.0.0.1:4123/webhooks/message-status" in printed.output
    default = runner.invoke(args=["vonage", "trigger", "status", "--print"], env={"PORT": None})
    assert "http://127.0.0.1:3000/webhooks/message-status" in default.output


@pytest.mark.slow  # runs pip --version in two interpreters
def test_a_venv_left_without_pip_is_rebuilt(tmp_path, monkeypatch):
    broken = tmp_path / ".venv"
    venv.create(broken, with_pip=False)  # as an interrupted first run leaves it
    bin_dir = broken / ("Scripts" if os.name == "nt" else "bin")
    assert not dev.has_pip(bin_dir / "python") and dev.has_pip(Path(sys.executable))
    monkeypatch.setattr(dev, "VENV", broken)
    monkeypatch.setattr(dev, "BIN", bin_dir)
    created, ran = [], []
    monkeypatch.setattr(dev.venv, "create", lambda path, **kw: created.append((path, kw)))
    real_run = subprocess.run
    monkeypatch.setattr(dev.subprocess, "run", lambda args, **kw: ran.append(args) if "install" in args
                        else real_run(args, **{"timeout": 60, **kw}))
    dev.ensure_venv()
    assert created == [(broken, {"clear": True, "with_pip": True})]
    assert [args[3:5] for args in ran] == [["install", "--quiet"], ["install", "--quiet"]]
    assert dev.installed_stamp().exists()


def test_dev_flask_sends_through_the_simulator_that_serve_set_up(tmp_path):
    env = {"INSTANCE_PATH": str(tmp_path)}
    assert not dev.send_through_simulator(env, 4000, create=False) and env == {"INSTANCE_PATH": str(tmp_path)}
    (tmp_path / "dev-private-key.pem").write_text("key")
    (tmp_path / "dev-application-id").write_text("app-1\n")
    assert dev.send_through_simulator(env, 4000, create=False)
    assert env["VONAGE_APPLICATION_ID"] == "app-1" and env["VONAGE_API_BASE"] == "http://127.0.0.1:4001"
    assert not dev.has_vonage_credentials({"VONAGE_API_KEY": "k"})
    assert dev.has_vonage_credentials({"VONAGE_API_KEY": "k", "VONAGE_API_SECRET": "s"})


@pytest.mark.slow
def test_dev_serve_without_credentials_sends_through_the_local_simulator(checkout):
    port = port_pair()
    env = clean_env(PORT=str(port))
    with DevServe(checkout, env, port) as served:
        login = wait_for(lambda: re.search(rf" \* Console: (http://127\.0\.0\.1:{port}/ui/login\?token=(\S+))",
                                           served.output()))
        instance = checkout / "instance"
        key = instance / "dev-private-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text().startswith("-----BEGIN PRIVATE KEY")
        assert (instance / "dev-application-id").read_text().strip()
        assert f"Messages go to the local Vonage simulator on http://127.0.0.1:{port + 1}" in served.output()
        assert requests.get(login.group(1), allow_redirects=False, timeout=5).status_code == 302
        auth = {"Authorization": f"Bearer {login.group(2)}"}
        queued = requests.post(served.url + "/api/outbox", headers=auth, timeout=5, json={
            "to": "447700900456", "from": "447700900123", "channel": "sms", "message_type": "text", "text": "hi"})
        assert queued.status_code == 202, queued.text

        def final():
            found = requests.get(f"{served.url}/api/outbox/{queued.json()['id']}", headers=auth, timeout=5).json()
            # The simulator rejects or fails 5% of messages, as real networks do: any final status
            # means it took the message and its signed callbacks came back and joined it.
            return found["state"] == "sent" and found.get("status") in ("delivered", "rejected", "undeliverable")

        wait_for(final, timeout=30)
        # Stopped alone (a process manager, a closed terminal): the server and the simulator stop with it.
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(timeout=30)
        wait_for(lambda: not dev.listening(port) and not dev.listening(port + 1), timeout=30)


@pytest.mark.slow
def test_dev_serve_reads_dotenv_reloads_edited_handlers_and_keeps_sms_text_out_of_its_log(checkout):
    port = port_pair()
    mark = checkout / "delivered.mark"
    # .env gives the port; the environment's own MAX_ATTEMPTS wins over the one .env gets wrong.
    (checkout / ".env").write_text(f"# from .env\nPORT={port}\nMAX_ATTEMPTS=five\n")
    env = clean_env(MAX_ATTEMPTS="3", VONAGE_API_KEY="a1b2c3d4", VONAGE_API_SECRET="not-used-here")
    try:
        with DevServe(checkout, env, port) as served:
            assert dev.RELOADING in served.output()
            assert "simulator" not in served.output() and not dev.listening(port + 1)  # credentials: no simulator

            text = "parcel 48213 waits at locker 7731"
            sms = dev_py(checkout, "flask", "vonage", "trigger", "sms", "--via", "get", "--text", text, env=env)
            assert sms.returncode == 0, sms.stdout + sms.stderr
            wait_for(lambda: "GET /webhooks/inbound-sms HTTP/1.1" in served.output())
            assert "7731" not in served.output() and "locker" not in served.output()

            # Edit a handler while it serves: the next callback runs the new code.
            with open(checkout / "handlers" / "status.py", "a", encoding="utf-8") as f:
                f.write(f"\n\ndef on_delivered(event):\n    __import__('pathlib').Path({str(mark)!r})"
                        ".write_text(event.message_id)\n")
            wait_for(lambda: "Detected change" in served.output() and served._ready(), timeout=30)

            def sent_and_handled():
                dev_py(checkout, "flask", "vonage", "trigger", "status", "--status", "delivered", env=env)
                return mark.exists()

            wait_for(sent_and_handled, timeout=40)
    finally:
        (checkout / ".env").unlink()
        shutil.copy(ROOT / "handlers" / "status.py", checkout / "handlers" / "status.py")


# -- the README's commands, as written, through dev.py --------------------------------------------
def readme_commands() -> list[list[str]]:
    """Each flask command the README names, as the words before its arguments (`events resend`, `init-db`)."""
    readme = (ROOT / "README.md").read_text()
    found = set()
    for words in re.findall(r"(?:flask --app app|dev\.py flask|`flask) ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", readme):
        words = words.split()
        found.add(tuple(words[:2] if words[0] in ("events", "vonage") else words[:1]))
    found.update(re.findall(r"`(events|vonage) ([a-z][a-z-]*)", readme))
    return sorted(list(words) for words in found)


def test_every_command_the_readme_names_exists(app):
    commands = readme_commands()
    assert ["events", "rejected"] in commands and ["vonage", "trigger"] in commands and ["init-db"] in commands
    for words in commands:
        result = app.test_cli_runner().invoke(args=[*words, "--help"])
        assert result.exit_code == 0, f"flask {' '.join(words)}: {result.output}"


@pytest.mark.slow
def test_readme_commands_run_through_dev_py_flask(checkout):
    env = clean_env()
    for args in (["init-db"], ["events", "list"], ["events", "rejected"], ["events", "prune", "--older-than", "30d"],
                 ["worker", "--until-idle"], ["vonage", "trigger", "status", "--print"]):
        result = dev_py(checkout, "flask", *args, env=env)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (args, result.stdout + result.stderr)
    doctor = dev_py(checkout, "flask", "vonage", "doctor", env=env)  # FAILs (no worker runs), without a traceback
    assert "signature secret" in doctor.stdout and "Traceback" not in doctor.stderr, doctor.stdout + doctor.stderr


@pytest.mark.slow
def test_send_wait_right_after_dev_serve_starts_is_sent_within_seconds(checkout):
    # The development server starts its worker when it starts: no request has reached it before the send.
    port = port_pair()
    env = clean_env(PORT=str(port))
    with open(checkout / f"serve-{port}.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, str(checkout / "dev.py"), "serve"], cwd=checkout, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: dev.listening(port) and dev.listening(port + 1), timeout=60)
        started = time.monotonic()
        sent = dev_py(checkout, "flask", "vonage", "send", "--to", "447700900456", "--from", "447700900123",
                      "--channel", "sms", "--text", "hi", "--wait", "--timeout", "20", env=env, timeout=40)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert time.monotonic() - started < 15
    finally:
        kill_group(proc.pid)
        proc.wait(timeout=10)


@pytest.mark.parametrize("reason", ['FATAL:  database "orders" does not exist',
                                    'FATAL:  password authentication failed for user "app"'])
def test_a_database_that_answers_and_refuses_stops_the_start(make_app, monkeypatch, reason):
    from sqlalchemy.exc import OperationalError

    from receiver.storage import migrate

    def refused(engine):
        raise OperationalError("SELECT 1", {}, Exception(f"connection failed: {reason}"))

    monkeypatch.setattr(migrate, "upgrade", refused)
    with pytest.raises(ConfigError) as stopped:
        make_app()
    assert stopped.value.message.startswith("DATABASE_URL (sqlite:") and reason.split("FATAL:")[1].strip() in \
        stopped.value.message



def test_after_a_reload_a_start_error_is_one_line_and_a_json_503(monkeypatch, capsys):
    import app as application
    from devkit import devserver

    def typo():
        raise ConfigError("STATUS_HANDLERS['delivred'] is not a status Vonage sends: did you mean 'delivered'?")

    monkeypatch.setattr(application, "create_app", typo)
    with pytest.raises(ConfigError):
        devserver.create_app()  # the first start stops
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    from werkzeug.test import Client

    response = Client(devserver.create_app()).post("/webhooks/message-status", data=b"{}")
    assert response.status_code == 503 and response.json["error"] == "not_started"
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("Error: STATUS_HANDLERS['delivred']") and line.endswith("the server reloads)")
