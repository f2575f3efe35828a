"""Development credentials for sending through the local simulator: an RSA private key and an application id
under instance/, made on first use and kept, like the development signature secret (receiver.guard).

Only `dev.py serve` uses them, when no Vonage credentials are set: `python -m receiver.simulator.credentials
INSTANCE_PATH` prints the key's path and the application id, one a line. Production never does.
"""
from __future__ import annotations

import os
import sys
import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_FILE = "dev-private-key.pem"
APPLICATION_ID_FILE = "dev-application-id"


def development_credentials(instance_path: str) -> tuple[str, str]:
    """(path of the development private key, the development application id), each made once."""
    os.makedirs(instance_path, exist_ok=True)
    key_path = os.path.join(instance_path, KEY_FILE)
    if not os.path.exists(key_path):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        _write_once(key_path, pem.decode("ascii"))
    id_path = os.path.join(instance_path, APPLICATION_ID_FILE)
    if not os.path.exists(id_path):
        _write_once(id_path, f"{uuid.uuid4()}\n")
    with open(id_path, encoding="utf-8") as f:
        return key_path, f.read().strip()


def _write_once(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile by another process: keep that one
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    print(*development_credentials(sys.argv[1]), sep="\n")
