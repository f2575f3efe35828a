#!/usr/bin/env python3
"""Local development in one command: `python3 dev.py serve` or `python3 dev.py test [--quick] [pytest args]`.

Creates .venv/ with the project's dependencies on first use (and again when the requirements
change, or when a first run was interrupted), then runs the server on $PORT (default 3000) with
SQLite, reloading when the code changes, or the test suite. Needs only Python 3.11+.
`python3 dev.py test` runs everything (as CI does); `python3 dev.py test --quick` runs the fast loop:
no test marked slow (none that starts a process, a browser or a pair of PostgreSQL workers), and
property-based tests with a fifth of their examples (the "quick" hypothesis profile).
`python3 dev.py flask ARGS` runs a `flask --app app ARGS` command with the server's development
settings (e.g. `python3 dev.py flask vonage trigger conversation`). Both read a .env file at the
repository root when there is one; a variable already set in the environment wins.
Without Vonage credentials, `serve` also runs the local Vonage simulator on $PORT+1, so sending works.
"""
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt")
RELOADING = " * Reloading on changes to handlers/ and schemas/"
QUICK = "--quick"


def installed_stamp() -> Path:
    """The file that says .venv holds exactly the current requirements."""
    digest = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in REQUIREMENTS)).hexdigest()[:16]
    return VENV / f".installed-{digest}"


def has_pip(python: Path) -> bool:
    return python.exists() and subprocess.run([str(python), "-m", "pip", "--version"],
                                              capture_output=True).returncode == 0


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is needed (this is {sys.version.split()[0]})")
    stamp = installed_stamp()
    if stamp.exists():
        return
    python = BIN / ("python.exe" if os.name == "nt" else "python")
    if not has_pip(python):
        # No venv yet, or one a first run left without pip (interrupted while creating it): start again.
        print("creating .venv ...", flush=True)
        venv.create(VENV, clear=VENV.exists(), with_pip=True)
    print("installing dependencies into .venv ...", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(ROOT / "requirements-dev.txt")],
                   check=True)
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()


def read_dotenv(path: Path) -> dict[str, str]:
    """The KEY=value lines of a .env file: blank lines and `#` comments skipped, `export ` allowed,
    one pair of surrounding quotes removed; in an unquoted value, ` #` starts a comment."""
    if not path.exists():
        return {}
    found = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key.isidentifier():
            sys.exit(f"Error: {path.name} line {number} is not KEY=value")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        found[key] = value
    return found


def has_vonage_credentials(env: dict) -> bool:
    """What the app sends with (receiver.sending.delivery.client_settings): an application's key, or key and secret."""
    return bool(env.get("VONAGE_PRIVATE_KEY") or env.get("VONAGE_PRIVATE_KEY_PATH")
                or (env.get("VONAGE_API_KEY") and env.get("VONAGE_API_SECRET")))


def serve_command(port: int, rest: list[str]) -> list[str]:
    # --reload restarts the server when a Python file of the project changes (handlers/ and schemas/
    # are imported, so watched); --no-debugger: a handler's exception stays a logged failure.
    # devkit.devserver: the app, or after a reload that broke it, one line and a 503 for every request.
    return [str(BIN / "flask"), "--app", "devkit.devserver", "run", "--port", str(port), "--reload", "--no-debugger",
            *rest]


def print_login_url(env: dict, port: int) -> None:
    """Once the app has generated its development admin token, print a URL that logs in with it."""
    path = Path(env.get("INSTANCE_PATH") or ROOT / "instance") / "dev-admin-token"
    for _ in range(300):
        token = path.read_text(encoding="utf-8").strip() if path.exists() else ""
        if token:
            print(f" * Console: http://127.0.0.1:{port}/ui/login?token={token}", flush=True)
            return
        time.sleep(0.1)


def send_through_simulator(env: dict, port: int, *, create: bool) -> bool:
    """Point sending at the local simulator on port+1, with the development key and application id under
    instance/ (made when `create`, else only used if `serve` made them): True when `env` now says so."""
    instance = Path(env.get("INSTANCE_PATH") or ROOT / "instance")
    key_path, id_path = instance / "dev-private-key.pem", instance / "dev-application-id"
    if create:
        subprocess.run([str(BIN / "python"), "-m", "devkit.simulator.credentials", str(instance)], cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, check=True)
    if not (key_path.exists() and id_path.exists()):
        return False
    env.update(VONAGE_PRIVATE_KEY_PATH=str(key_path), VONAGE_APPLICATION_ID=id_path.read_text(encoding="utf-8").strip(),
               VONAGE_API_BASE=f"http://127.0.0.1:{port + 1}")
    return True


def start_simulator(env: dict, port: int) -> subprocess.Popen | None:
    """The local Vonage on port+1, sending pointed at it in `env`. Returns once it listens, or has exited
    (it has said why); None when port+1 is taken."""
    if listening(port + 1):
        print(f"Error: port {port + 1} (PORT+1) is taken; the local Vonage simulator needs it: set PORT to another "
              "port, or set Vonage credentials")
        return None
    send_through_simulator(env, port, create=True)
    # Listening before the server starts: both build the app, and only one at a time should migrate the database.
    simulator = subprocess.Popen([str(BIN / "flask"), "--app", "app", "vonage", "simulator", "--port", str(port + 1),
                                  "--receiver-url", f"http://127.0.0.1:{port}"], cwd=ROOT, env=env)
    while simulator.poll() is None and not listening(port + 1):
        time.sleep(0.1)
    if simulator.returncode is None:
        print(f" * Messages go to the local Vonage simulator on http://127.0.0.1:{port + 1} (no Vonage credentials "
              "set); set VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY_PATH (or VONAGE_API_KEY and VONAGE_API_SECRET) "
              "to send through Vonage", flush=True)
    return simulator


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def serve(env: dict, rest: list[str]) -> int:
    raw = env.get("PORT") or "3000"
    if not raw.isdigit() or not 0 < int(raw) < 65535:
        print(f"Error: PORT={raw!r}: expected a whole number from 1 to 65534 (the simulator takes PORT+1)")
        return 2
    port = int(raw)
    children = []
    # Stopped like Ctrl-C (a process manager, a closed terminal): the children stop with it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if not has_vonage_credentials(env):
            simulator = start_simulator(env, port)
            if simulator is None or simulator.returncode is not None:
                return simulator and simulator.returncode or 2
            children.append(simulator)
        if not env.get("ADMIN_TOKEN") and env["APP_ENV"] == "development":
            threading.Thread(target=print_login_url, args=(env, port), daemon=True).start()
        print(RELOADING, flush=True)
        children.append(subprocess.Popen(serve_command(port, rest), cwd=ROOT, env=env))
        return children[-1].wait()
    except KeyboardInterrupt:
        return 130
    finally:
        for child in reversed(children):
            stop(child)


def test_command(rest: list[str], env: dict) -> list[str]:
    """pytest's command line for `dev.py test ARGS`; with --quick (anywhere in ARGS), the fast loop. A -m
    of the caller's comes after the loop's own, so it is the one pytest keeps."""
    command = [str(BIN / "python"), "-m", "pytest"]
    if QUICK in rest:
        env["HYPOTHESIS_PROFILE"] = "quick"  # tests/conftest.py registers it
        command += ["-m", "not slow"]
    return command + [arg for arg in rest if arg != QUICK]


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command not in ("serve", "test", "flask"):
        print(__doc__.strip())
        return 2
    ensure_venv()
    env = dict(os.environ)
    if command == "test":  # the tests build their apps from the environment: a developer's .env stays out
        return subprocess.call(test_command(rest, env), cwd=ROOT, env=env)
    env = {**read_dotenv(ROOT / ".env"), **env}
    # Development: without VONAGE_SIGNATURE_SECRET the app generates one under instance/.
    env.setdefault("APP_ENV", "development")
    env.setdefault("LOG_FORMAT", "text")
    if command == "serve":
        return serve(env, rest)
    port = env.get("PORT") or "3000"
    if not has_vonage_credentials(env) and port.isdigit():
        send_through_simulator(env, int(port), create=False)  # as `serve` does: `vonage send` queues for it
    return subprocess.call([str(BIN / "flask"), "--app", "app", *rest], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
