"""ADMIN_TOKEN and METRICS_TOKEN must be tokens in production: long, varied, and no other secret;
signature secrets must not be blank or one character repeated. Each refusal is one line naming the setting."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.operator import tokens
from receiver.platform.config import ConfigError
from tests.conftest import SECRET, examples

STRONG = "Zq8-Lw3_Xv7.Np2Rt6Ks9Hb4"


def refusal(make_app, **settings_):
    with pytest.raises(ConfigError) as refused:
        make_app(**settings_)
    line = refused.value.message
    assert "\n" not in line and refused.value.exit_code == 2
    return line


@pytest.mark.parametrize("name", ["ADMIN_TOKEN", "METRICS_TOKEN"])
@pytest.mark.parametrize("token, why", [
    ("a", "shorter than 24"),
    ("test-admin-token", "shorter than 24"),
    ("abababababababababababababab", "fewer than 10 different"),
    ("0123456780123456780123456", "fewer than 10 different"),
])
def test_a_weak_token_stops_the_start_naming_the_setting(make_app, name, token, why):
    line = refusal(make_app, **{name: token})
    assert line.startswith(f"{name} ") and why in line and (len(token) < 4 or token not in line)


@pytest.mark.parametrize("name", ["ADMIN_TOKEN", "METRICS_TOKEN"])
def test_a_token_that_is_another_secret_stops_the_start(make_app, name):
    assert refusal(make_app, **{name: SECRET}) == (f"{name} is the same as VONAGE_SIGNATURE_SECRET: "
                                                    "generate one with `openssl rand -hex 32`")
    api_secret = "Vonage-api-secret-Pq7Wm2Xz9"
    assert "is the same as VONAGE_API_SECRET" in refusal(make_app, **{name: api_secret, "VONAGE_API_SECRET": api_secret})
    previous = "previous-signature-secret-Hc4Nj8"
    line = refusal(make_app, **{name: previous, "VONAGE_SIGNATURE_SECRET": f"{SECRET},{previous}"})
    assert "is the same as VONAGE_SIGNATURE_SECRET" in line


def test_development_generates_its_own_and_lets_a_weak_one_be(make_app):
    app = make_app(APP_ENV="development", ADMIN_TOKEN="a", METRICS_TOKEN="b")
    assert app.config["ADMIN_TOKEN"] == "a"


@settings(max_examples=examples(100))
@given(st.text(min_size=0, max_size=40))
def test_every_token_short_or_plain_is_refused_and_every_long_varied_one_taken(token):
    problem = tokens.weakness(token, {"VONAGE_SIGNATURE_SECRET": SECRET})
    if len(token) < 24 or len(set(token)) < 10 or token == SECRET:
        assert problem is not None
    else:
        assert problem is None


@pytest.mark.parametrize("setting, value, line", [
    ("VONAGE_SIGNATURE_SECRET", " " * 32, "VONAGE_SIGNATURE_SECRET is blank"),
    ("VONAGE_SIGNATURE_SECRET", "\t \n" * 8, "VONAGE_SIGNATURE_SECRET is blank"),
    ("VONAGE_SIGNATURE_SECRET", "x" * 32, "VONAGE_SIGNATURE_SECRET is one character repeated"),
    ("VONAGE_SIGNATURE_SECRET", f"{SECRET},{'0' * 32}", "the previous secret in VONAGE_SIGNATURE_SECRET is one "
                                                        "character repeated"),
    ("VONAGE_SIGNATURE_SECRETS", " " * 32, "VONAGE_SIGNATURE_SECRETS is blank"),
    ("VONAGE_SIGNATURE_SECRETS", "k1=" + "z" * 32, "VONAGE_SIGNATURE_SECRETS (api key k1) is one character repeated"),
])
def test_a_blank_or_repeated_signature_secret_stops_the_start(make_app, setting, value, line):
    refused = refusal(make_app, **{setting: value})
    assert refused.startswith(line)


def test_a_blank_secret_stops_development_too(make_app):
    # A whitespace secret would be no secret at all: every callback answered 401, never retried.
    assert refusal(make_app, APP_ENV="development", VONAGE_SIGNATURE_SECRET=" " * 32).startswith(
        "VONAGE_SIGNATURE_SECRET is blank")
