#!/usr/bin/env python3
"""Local development in one command: `python3 dev.py serve` or `python3 dev.py test [pytest args]`.

Creates .venv/ with the project's dependencies on first use (and again when the requirements
change), then runs the server on port 3000 with SQLite, or the test suite. Needs only Python 3.11+.
`python3 dev.py flask ARGS` runs a `flask --app app ARGS` command with the server's development
settings (e.g. `python3 dev.py flask vonage trigger conversation`).
"""
import hashlib
import os
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


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is needed (this is {sys.version.split()[0]})")
    digest = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in REQUIREMENTS)).hexdigest()[:16]
    stamp = VENV / f".installed-{digest}"
    if stamp.exists():
        return
    if not (BIN / "python").exists() and not (BIN / "python.exe").exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing dependencies into .venv ...", flush=True)
    python = str(BIN / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", str(ROOT / "requirements-dev.txt")], check=True)
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()


def print_login_url(env: dict, port: str) -> None:
    """Once the app has generated its development admin token, print a URL that logs in with it."""
    path = Path(env.get("INSTANCE_PATH") or ROOT / "instance") / "dev-admin-token"
    for _ in range(300):
        token = path.read_text(encoding="utf-8").strip() if path.exists() else ""
        if token:
            print(f" * Console: http://127.0.0.1:{port}/ui/login?token={token}", flush=True)
            return
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command not in ("serve", "test", "flask"):
        print(__doc__.strip())
        return 2
    ensure_venv()
    env = dict(os.environ)
    if command in ("serve", "flask"):
        # Development: without VONAGE_SIGNATURE_SECRET the app generates one under instance/.
        env.setdefault("APP_ENV", "development")
        env.setdefault("LOG_FORMAT", "text")
    if command == "serve":
        port = env.get("PORT", "3000")
        args = [str(BIN / "flask"), "--app", "app", "run", "--port", port, *rest]
    elif command == "flask":
        args = [str(BIN / "flask"), "--app", "app", *rest]
    else:
        args = [str(BIN / "python"), "-m", "pytest", *rest]
    if command == "serve" and not env.get("ADMIN_TOKEN") and env["APP_ENV"] == "development":
        threading.Thread(target=print_login_url, args=(env, port), daemon=True).start()
    return subprocess.call(args, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
