"""Development credentials for sending through the local simulator: an RSA private key and an application id
under instance/, made on first use and kept, like the development signature secret (receiver.webhooks.guard).

Only `dev.py serve` uses them, when no Vonage credentials are set: `python -m devkit.simulator.credentials
INSTANCE_PATH` prints the key's path and the application id, one a line. Production never does.
"""
from __future__ import annotations

import os
import sys
import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from receiver.platform.devfiles import made_once

KEY_FILE = "dev-private-key.pem"
APPLICATION_ID_FILE = "dev-application-id"


def development_credentials(instance_path: str) -> tuple[str, str]:
    """(path of the development private key, the development application id), each made once."""
    made_once(instance_path, KEY_FILE, _private_key_pem)
    application_id, _ = made_once(instance_path, APPLICATION_ID_FILE, lambda: str(uuid.uuid4()))
    return os.path.join(instance_path, KEY_FILE), application_id


def _private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


if __name__ == "__main__":
    print(*development_credentials(sys.argv[1]), sep="\n")
