"""receiver.webhooks.keyring: signature secrets per API key, from VONAGE_SIGNATURE_SECRET(S), that never show a
secret in an error or a repr. (How a keyring picks the secret for a callback: test_signatures.py.)"""
import pytest

from receiver.webhooks.keyring import Keyring

SECRET = "Yq9vD3kE7pL2sX8wR4tN6bM1cZ5hJ0aF"
PREVIOUS_SECRET = "previous-secret-0123456789abcdefgh"


def test_single_secret_serves_every_api_key():
    keyring = Keyring.from_config(f" {SECRET} , {PREVIOUS_SECRET} ", None)
    assert keyring.secrets_for("anykey") == keyring.secrets_for(None) == [SECRET, PREVIOUS_SECRET]


def test_per_key_map_tolerates_whitespace_and_trailing_semicolon():
    keyring = Keyring.from_config(None, " k1 = s1 , s0 ;\n k2=s2 ; ")
    assert (keyring.secrets_for("k1"), keyring.secrets_for("k2")) == (["s1", "s0"], ["s2"])


def test_key_missing_from_map_without_single_secret_has_no_secrets():
    assert Keyring.from_config(None, "k1=s1").secrets_for("k2") == []


def test_key_missing_from_map_falls_back_to_single_secret():
    assert Keyring.from_config("s0", "k1=s1").secrets_for("k2") == ["s0"]


def test_single_secret_with_api_key_belongs_to_that_key_only():
    keyring = Keyring.from_config("s0", None, api_key="k0")
    assert (keyring.secrets_for("k0"), keyring.secrets_for("k9")) == (["s0"], [])


@pytest.mark.parametrize("secret, secrets_by_key", [(None, None), ("", ""), ("  ", " ; ")])
def test_unset_config_gives_an_empty_keyring(secret, secrets_by_key):
    assert not Keyring.from_config(secret, secrets_by_key)


@pytest.mark.parametrize(
    "secret, secrets_by_key, api_key",
    [
        ("s1,", None, None),
        (",s1", None, None),
        ("s1,,s0", None, None),
        ("s2,s1,s0", None, None),
        (None, "k1=", None),
        (None, "k1=s1,", None),
        (None, "=s1", None),
        (None, "k1", None),
        (None, "k1=s1;k1=s2", None),
        ("s0", "k1=s1", "k1"),
    ],
)
def test_broken_config_raises_value_error(secret, secrets_by_key, api_key):
    with pytest.raises(ValueError):
        Keyring.from_config(secret, secrets_by_key, api_key)


def test_config_errors_never_quote_a_secret():
    with pytest.raises(ValueError) as caught:
        Keyring.from_config(None, "k1=good; TopSecretValue")
    assert "TopSecretValue" not in str(caught.value)


def test_repr_never_shows_a_secret():
    assert SECRET not in repr(Keyring.from_config(SECRET, f"k1={PREVIOUS_SECRET}"))
