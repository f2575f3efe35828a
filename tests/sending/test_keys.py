"""receiver.sending.keys: the application's private key, from the PEM text or a file; its public half; and a
bad key refused in one line that names the setting and shows none of it. (Sending with either form of the
key: test_client.py.)"""
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from receiver.sending.keys import load_private_key, public_key_pem


def pem_of(key, encryption=None):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption or serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def private_pem():
    return pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def test_the_public_key_is_the_private_keys_half(private_pem):
    public = serialization.load_pem_public_key(public_key_pem(private_pem).encode())
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)

    assert public.public_numbers() == private.public_key().public_numbers()


NOT_PEM = ("VONAGE_PRIVATE_KEY is not a PEM private key: give the whole key, from -----BEGIN PRIVATE KEY----- "
           "to -----END PRIVATE KEY-----")


def ec_pem():
    return pem_of(ec.generate_private_key(ec.SECP256R1()))


def encrypted_pem():
    return pem_of(ec.generate_private_key(ec.SECP256R1()), serialization.BestAvailableEncryption(b"pw"))


@pytest.mark.parametrize("arguments, message", [
    ({"text": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"},
     f"{NOT_PEM} (to name a file, use VONAGE_PRIVATE_KEY_PATH)"),
    ({"text": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADAN\\n-----END PRIVATE KEY-----"}, NOT_PEM),
    ({"text": ec_pem()}, "VONAGE_PRIVATE_KEY is not an RSA private key: Vonage application keys are RSA (RS256)"),
    ({"text": encrypted_pem()}, "VONAGE_PRIVATE_KEY is an encrypted private key"),
    ({"path": "/nonexistent/private.key"},
     "VONAGE_PRIVATE_KEY_PATH: cannot read /nonexistent/private.key (No such file or directory)"),
    ({"text": "x", "path": "/k"}, "set VONAGE_PRIVATE_KEY or VONAGE_PRIVATE_KEY_PATH, not both"),
    ({"text": "  "}, "set VONAGE_PRIVATE_KEY (the PEM text) or VONAGE_PRIVATE_KEY_PATH (a file holding it)"),
])
def test_a_bad_key_is_one_line_naming_the_setting(arguments, message):
    with pytest.raises(ValueError) as caught:
        load_private_key(**arguments)

    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value) and "MIIEvQIBADAN" not in str(caught.value)
