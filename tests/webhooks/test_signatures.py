"""Tests for receiver.webhooks.signatures: the spec's vectors, cross-checks with Vonage's SDK, one test per attack."""

import base64
import hashlib
import hmac
import json
from urllib.parse import urlencode

import jwt
import pytest
import vonage_jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from vonage_http_client.auth import Auth

from receiver.webhooks.keyring import Keyring
from receiver.webhooks.payloads import DuplicateParameter, sms_params
from receiver.webhooks.signatures import (
    SMS_SIGNATURE_METHODS,
    SignatureError,
    sign_jwt,
    sign_sms,
    sms_params_signature,
    verify_jwt,
    verify_sms,
)

# Spec 4.4. Secrets are 32 bytes or more: PyJWT (inside vonage_jwt) warns below that, and warnings are errors here.
SECRET = "Yq9vD3kE7pL2sX8wR4tN6bM1cZ5hJ0aF"
PREVIOUS_SECRET = "previous-secret-0123456789abcdefgh"
UNRELATED_SECRET = "unrelated-secret-0123456789abcdefg"
API_KEY = "a1b2c3d4"
APPLICATION_ID = "e3b0c442-98fc-4c14-9afb-f4c8996fb924"
NOW = 1741944413
BODY = (
    b'{"channel":"sms","message_uuid":"5f6a0c3e-2b7d-4e1a-9c8f-3d2e1b0a9f87","to":"447700900456",'
    b'"from":"447700900123","timestamp":"2025-03-14T09:26:53.412Z","text":"Hi, is my order ready?",'
    b'"sms":{"num_messages":"1","keyword":"HI"},"usage":{"price":"0.0057","currency":"EUR"},"message_type":"text"}'
)
SPEC_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJpYXQiOjE3NDE5NDQ0MTMsImp0aSI6IjBiOWU2YTUyLTdjNDEtNGQ4ZS1iM2Y1LTJhMWM5ZTdkNmY0MCIsImlzcyI6IlZvbmFnZSIsInBheWxv"
    "YWRfaGFzaCI6IjkyYzAyODcwYzMyNzliNjc2ZjZjODhhMjI1YmZkMjFjODMxM2E1MDkyMjUzZjM2ZTNkYTNjNzg5YzYzODJlMzAiLCJhcGlfa2V5"
    "IjoiYTFiMmMzZDQiLCJhcHBsaWNhdGlvbl9pZCI6ImUzYjBjNDQyLTk4ZmMtNGMxNC05YWZiLWY0Yzg5OTZmYjkyNCJ9."
    "OEMoIs4zLtHxEbgz0WH7J2EgIEdefXE8CsK2CNz2ZIw"
)
# Spec 5.4 inbound GET, minus sig; 5.5 gives its signatures.
SMS_QUERY = (
    "msisdn=447700900123&to=447700900456&messageId=0A0000001A2B3C4D&text=Hi+%26+welcome%3Dyes&type=text"
    "&keyword=HI&api-key=a1b2c3d4&message-timestamp=2025-03-14+09%3A26%3A53&timestamp=1741944413"
    "&nonce=6f1c2a0e-9d3b-4c5e-8a71-2b4d6e8f0a13"
)
KEYRING = Keyring.from_config(SECRET, None)


def signed_jwt_request(body=BODY, secret=SECRET, api_key=API_KEY, iat=NOW):
    """Return (Authorization header, body) exactly as Vonage sends a signed Messages webhook."""
    token = sign_jwt(body, secret, api_key=api_key, application_id=APPLICATION_ID, iat=iat)
    return f"Bearer {token}", body


def signed_sms_params(secret=SECRET, method="sha256", api_key=API_KEY, timestamp=NOW):
    """Return SMS API inbound parameters exactly as Vonage sends them, signed."""
    params = {
        "msisdn": "447700900123",
        "to": "447700900456",
        "messageId": "0A0000001A2B3C4D",
        "text": "Hi & welcome=yes",
        "type": "text",
        "keyword": "HI",
        "api-key": api_key,
        "message-timestamp": "2025-03-14 09:26:53",
    }
    return sign_sms(params, secret, method, timestamp=timestamp)


def forged_token(header, claims, secret=SECRET):
    """Encode any header and claims and HMAC-SHA256 them with `secret`, whatever the header says."""
    segments = [
        base64.urlsafe_b64encode(json.dumps(part, separators=(",", ":")).encode()).rstrip(b"=")
        for part in (header, claims)
    ]
    signing_input = b".".join(segments)
    signature = base64.urlsafe_b64encode(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature.rstrip(b"=")).decode()


def string_to_sign(items):
    """Spec 5.5 steps 4-5 over (key, value) pairs in the order given."""
    return "".join(f"&{key}={value.replace('&', '_').replace('=', '_')}" for key, value in items)


def genuine_claims(**changes):
    """The claims Vonage signs for BODY, with `changes` applied; `name=...` drops a claim."""
    claims = {
        "iat": NOW,
        "jti": "0b9e6a52-7c41-4d8e-b3f5-2a1c9e7d6f40",
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(BODY).hexdigest(),
        "api_key": API_KEY,
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not ...}


def rejection(call, *args, **kwargs):
    """The SignatureError that `call` must raise."""
    with pytest.raises(SignatureError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- Messages API JWT: the spec vector ---------------------------------------------------------------------


def test_spec_jwt_vector_verifies_with_frozen_clock():
    claims = verify_jwt(f"Bearer {SPEC_TOKEN}", BODY, KEYRING, now=NOW + 5)
    assert claims["jti"] == "0b9e6a52-7c41-4d8e-b3f5-2a1c9e7d6f40"
    assert claims["application_id"] == APPLICATION_ID


def test_sign_jwt_reproduces_spec_vector_byte_for_byte():
    jti = "0b9e6a52-7c41-4d8e-b3f5-2a1c9e7d6f40"
    token = sign_jwt(BODY, SECRET, api_key=API_KEY, application_id=APPLICATION_ID, iat=NOW, jti=jti)
    assert token == SPEC_TOKEN


def test_spec_jwt_vector_fails_with_any_other_secret():
    error = rejection(verify_jwt, f"Bearer {SPEC_TOKEN}", BODY, Keyring.from_config(UNRELATED_SECRET, None), now=NOW)
    assert error.reason == "bad_signature"


# --- Messages API JWT: cross-checks with Vonage's Python SDK (vonage-jwt) ----------------------------------


def test_spec_vector_verifies_with_vonage_jwt():
    assert vonage_jwt.verify_signature(SPEC_TOKEN, SECRET) is True


def test_our_token_verifies_with_vonage_jwt():
    authorization, _ = signed_jwt_request(iat=None)
    assert vonage_jwt.verify_signature(authorization.split()[1], SECRET) is True


def test_wrong_secret_is_rejected_by_vonage_jwt_and_by_us():
    authorization, body = signed_jwt_request(secret=UNRELATED_SECRET)
    assert vonage_jwt.verify_signature(authorization.split()[1], SECRET) is False
    assert rejection(verify_jwt, authorization, body, KEYRING, now=NOW).reason == "bad_signature"


def test_token_from_pyjwt_verifies_here():
    token = jwt.encode(genuine_claims(), SECRET, algorithm="HS256")
    assert verify_jwt(f"Bearer {token}", BODY, KEYRING, now=NOW)["api_key"] == API_KEY


# --- Messages API JWT: accepted variations -----------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme):
    authorization, body = signed_jwt_request()
    assert verify_jwt(authorization.replace("Bearer", scheme), body, KEYRING, now=NOW)["iss"] == "Vonage"


def test_uppercase_payload_hash_is_accepted():
    claims = genuine_claims(payload_hash=hashlib.sha256(BODY).hexdigest().upper())
    token = forged_token({"alg": "HS256", "typ": "JWT"}, claims)
    assert verify_jwt(f"Bearer {token}", BODY, KEYRING, now=NOW)["api_key"] == API_KEY


def test_payload_hash_of_compact_reserialisation_is_accepted():
    pretty_body = json.dumps(json.loads(BODY), indent=2).encode()
    authorization, _ = signed_jwt_request()  # hashes the compact BODY, as Vonage's Node sample does
    assert verify_jwt(authorization, pretty_body, KEYRING, now=NOW)["api_key"] == API_KEY


def test_iat_within_leeway_in_the_future_is_accepted():
    authorization, body = signed_jwt_request(iat=NOW + 300)
    assert verify_jwt(authorization, body, KEYRING, now=NOW, iat_leeway=300)["iat"] == NOW + 300


def test_old_token_is_accepted_when_max_age_is_off():
    authorization, body = signed_jwt_request(iat=NOW - 30 * 86400)
    assert verify_jwt(authorization, body, KEYRING, now=NOW)["iat"] == NOW - 30 * 86400


def test_unexpired_exp_is_accepted():
    token = forged_token({"alg": "HS256", "typ": "JWT"}, genuine_claims(exp=NOW + 60))
    assert verify_jwt(f"Bearer {token}", BODY, KEYRING, now=NOW)["exp"] == NOW + 60


# --- Messages API JWT: one test per attack or broken request -----------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "   ", "Bearer", "bearer   "])
def test_missing_token_is_retryable(authorization):
    error = rejection(verify_jwt, authorization, BODY, KEYRING, now=NOW)
    assert (error.reason, error.retryable) == ("missing_token", True)


def test_other_failures_are_not_retryable():
    authorization, body = signed_jwt_request(secret=UNRELATED_SECRET)
    assert rejection(verify_jwt, authorization, body, KEYRING, now=NOW).retryable is False


@pytest.mark.parametrize("authorization", [f"Basic {SPEC_TOKEN}", SPEC_TOKEN, f"Token {SPEC_TOKEN}"])
def test_non_bearer_scheme_is_rejected(authorization):
    assert rejection(verify_jwt, authorization, BODY, KEYRING, now=NOW).reason == "malformed_token"


def test_wrong_secret_is_rejected():
    authorization, body = signed_jwt_request(secret=UNRELATED_SECRET)
    assert rejection(verify_jwt, authorization, body, KEYRING, now=NOW).reason == "bad_signature"


def test_altered_body_with_original_token_is_rejected():
    authorization, _ = signed_jwt_request()
    altered = BODY.replace(b"Hi, is my order ready?", b"Hi, refund me now")
    assert rejection(verify_jwt, authorization, altered, KEYRING, now=NOW).reason == "payload_hash_mismatch"


def test_token_replayed_onto_another_body_is_rejected():
    authorization, _ = signed_jwt_request()
    _, other_body = signed_jwt_request(body=BODY.replace(b"5f6a0c3e", b"99999999"))
    assert rejection(verify_jwt, authorization, other_body, KEYRING, now=NOW).reason == "payload_hash_mismatch"


def test_reserialisation_with_reordered_keys_is_rejected():
    authorization, _ = signed_jwt_request()
    reordered = json.dumps(dict(sorted(json.loads(BODY).items())), separators=(",", ":")).encode()
    assert rejection(verify_jwt, authorization, reordered, KEYRING, now=NOW).reason == "payload_hash_mismatch"


@pytest.fixture(scope="module")
def rsa_private_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": "JWT"},
        {"alg": "None"},
        {"alg": "RS256", "typ": "JWT"},  # RS/HS confusion: header says RS256, signature is a valid HMAC
        {"alg": "HS512", "typ": "JWT"},
        {"alg": "hs256", "typ": "JWT"},
        {"typ": "JWT"},
    ],
)
def test_any_algorithm_but_hs256_is_rejected_even_with_a_valid_hmac(header):
    token = forged_token(header, genuine_claims())
    assert rejection(verify_jwt, f"Bearer {token}", BODY, KEYRING, now=NOW).reason == "bad_algorithm"


@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
def test_unsigned_alg_none_token_is_rejected(signature):
    header_and_claims = forged_token({"alg": "none"}, genuine_claims()).rsplit(".", 1)[0]
    error = rejection(verify_jwt, f"Bearer {header_and_claims}.{signature}", BODY, KEYRING, now=NOW)
    assert error.reason == "bad_algorithm"


def test_rs256_signed_token_is_rejected(rsa_private_key):
    token = jwt.encode(genuine_claims(), rsa_private_key, algorithm="RS256")
    assert rejection(verify_jwt, f"Bearer {token}", BODY, KEYRING, now=NOW).reason == "bad_algorithm"


@pytest.mark.parametrize(
    "truncate",
    [
        lambda token: token[:-1],
        lambda token: token[:-10],
        lambda token: token.rsplit(".", 1)[0],
        lambda token: token.rsplit(".", 1)[0] + ".",
        lambda token: token.split(".")[0],
        lambda token: token[: len(token) // 2],
    ],
    ids=["last-char", "ten-chars", "no-signature", "empty-signature", "header-only", "half"],
)
def test_truncated_token_is_rejected(truncate):
    error = rejection(verify_jwt, f"Bearer {truncate(SPEC_TOKEN)}", BODY, KEYRING, now=NOW)
    assert error.reason in {"malformed_token", "bad_signature"}


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c.d",
        "!!!.???.###",
        "e30.e30.e30",  # {} header: no alg
        "eyJhbGciOiJIUzI1NiJ9.W10.c2ln",  # claims are a JSON list
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",  # claims are not JSON
        "x" * 10_000,
    ],
)
def test_malformed_token_is_rejected(token):
    error = rejection(verify_jwt, f"Bearer {token}", BODY, KEYRING, now=NOW)
    assert error.reason in {"malformed_token", "bad_algorithm"}


def test_iat_far_in_the_future_is_rejected():
    authorization, body = signed_jwt_request(iat=NOW + 3600)
    assert rejection(verify_jwt, authorization, body, KEYRING, now=NOW).reason == "iat_in_future"


def test_iat_just_beyond_leeway_is_rejected():
    authorization, body = signed_jwt_request(iat=NOW + 301)
    assert rejection(verify_jwt, authorization, body, KEYRING, now=NOW, iat_leeway=300).reason == "iat_in_future"


def test_token_older_than_max_age_is_rejected():
    authorization, body = signed_jwt_request(iat=NOW - 3601)
    assert rejection(verify_jwt, authorization, body, KEYRING, now=NOW, max_age=3600).reason == "token_too_old"


def test_expired_exp_is_rejected():
    token = forged_token({"alg": "HS256", "typ": "JWT"}, genuine_claims(exp=NOW - 301))
    assert rejection(verify_jwt, f"Bearer {token}", BODY, KEYRING, now=NOW).reason == "token_expired"


@pytest.mark.parametrize("claim", ["iat", "iss", "payload_hash", "api_key"])
def test_missing_required_claim_is_rejected(claim):
    token = forged_token({"alg": "HS256", "typ": "JWT"}, genuine_claims(**{claim: ...}))
    assert rejection(verify_jwt, f"Bearer {token}", BODY, KEYRING, now=NOW).reason == "missing_claim"


@pytest.mark.parametrize("iss", ["vonage", "Nexmo", "", 7])
def test_wrong_issuer_is_rejected(iss):
    token = forged_token({"alg": "HS256", "typ": "JWT"}, genuine_claims(iss=iss))
    assert rejection(verify_jwt, f"Bearer {token}", BODY, KEYRING, now=NOW).reason == "bad_issuer"


@pytest.mark.parametrize("iat", [str(NOW), True, [NOW], {"t": NOW}, float("inf"), float("nan")])
def test_non_numeric_iat_is_rejected(iat):
    token = forged_token({"alg": "HS256", "typ": "JWT"}, genuine_claims(iat=iat))
    assert rejection(verify_jwt, f"Bearer {token}", BODY, KEYRING, now=NOW).reason == "malformed_claim"


@pytest.mark.parametrize("payload_hash", [123, ["a"], "é" * 64, ""])
def test_malformed_payload_hash_is_rejected(payload_hash):
    token = forged_token({"alg": "HS256", "typ": "JWT"}, genuine_claims(payload_hash=payload_hash))
    assert rejection(verify_jwt, f"Bearer {token}", BODY, KEYRING, now=NOW).reason == "payload_hash_mismatch"


def test_unknown_api_key_is_rejected():
    keyring = Keyring.from_config(None, f"other999={SECRET}")
    authorization, body = signed_jwt_request()
    assert rejection(verify_jwt, authorization, body, keyring, now=NOW).reason == "unknown_api_key"


def test_previous_secret_is_accepted_during_rotation():
    keyring = Keyring.from_config(f"{SECRET},{PREVIOUS_SECRET}", None)
    authorization, body = signed_jwt_request(secret=PREVIOUS_SECRET)
    assert verify_jwt(authorization, body, keyring, now=NOW)["api_key"] == API_KEY


def test_unrelated_secret_is_rejected_during_rotation():
    keyring = Keyring.from_config(f"{SECRET},{PREVIOUS_SECRET}", None)
    authorization, body = signed_jwt_request(secret=UNRELATED_SECRET)
    assert rejection(verify_jwt, authorization, body, keyring, now=NOW).reason == "bad_signature"


def test_secret_is_chosen_by_api_key_claim():
    keyring = Keyring.from_config(None, f"{API_KEY}={SECRET}; sub12345={UNRELATED_SECRET}")
    authorization, body = signed_jwt_request(secret=UNRELATED_SECRET, api_key="sub12345")
    assert verify_jwt(authorization, body, keyring, now=NOW)["api_key"] == "sub12345"


def test_token_signed_with_another_accounts_secret_is_rejected():
    keyring = Keyring.from_config(None, f"{API_KEY}={SECRET}; sub12345={UNRELATED_SECRET}")
    authorization, body = signed_jwt_request(secret=UNRELATED_SECRET, api_key=API_KEY)
    assert rejection(verify_jwt, authorization, body, keyring, now=NOW).reason == "bad_signature"


# --- SMS API sig: the spec vectors -------------------------------------------------------------------------

TABLE_PARAMS = {"param1": "value1", "param2": "value2", "timestamp": "1234567890"}
AMPERSAND_PARAMS = {"param1": "value&1", "param2": "value=2", "timestamp": "1234567890"}


@pytest.mark.parametrize(
    "params, method, sig",
    [
        (TABLE_PARAMS, "sha256", "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287"),
        (TABLE_PARAMS, "md5", "724c2bf6ca423c36e20631b11d1c5753"),
        (TABLE_PARAMS, "md5hash", "d72f75ac8cda9bbce891c4fa62bee6cd"),
        ({"param": "value", "timestamp": "1234567890"}, "md5", "655a4d0b7f064dff438defc52b012cf5"),
        (AMPERSAND_PARAMS, "md5", "2bbf0abafb2c55e5af6231513896a2ac"),
    ],
)
def test_sms_signature_matches_spec_table(params, method, sig):
    assert sms_params_signature(params, "signature_secret", method) == sig


@pytest.mark.parametrize(
    "method, sig",
    [
        ("sha256", "a58767e71d8b71e6e935a368a07b0c3ba26225ddbf4fab297af8fd13cf0e82ae"),
        ("md5", "b83b54beabc664a4cbdea6ab7b266ee4"),
        ("sha1", "d2962aee4da7a81c55c7f51f22f8414ad086089d"),
        ("md5hash", "c2f7e4ecf05799420c26f9eb1d189a33"),
    ],
)
def test_sms_realistic_inbound_vector_verifies(method, sig):
    params = sms_params(SMS_QUERY + f"&sig={sig}", b"", "")
    assert sms_params_signature(params, SECRET, method) == sig
    verify_sms(params, KEYRING, method, now=NOW)


# --- SMS API sig: cross-checks with Vonage's Python SDK (vonage-http-client, HMAC methods only) -------------

HMAC_METHODS = ["md5", "sha1", "sha256", "sha512"]


@pytest.mark.parametrize("method", HMAC_METHODS)
def test_vonage_http_client_signature_verifies_here(method):
    auth = Auth(api_key=API_KEY, signature_secret=SECRET, signature_method=method)
    params = {key: value for key, value in signed_sms_params().items() if key != "sig"}
    params["sig"] = auth.sign_params(dict(params))
    verify_sms(params, KEYRING, method, now=NOW)


@pytest.mark.parametrize("method", HMAC_METHODS)
def test_our_signature_verifies_in_vonage_http_client(method):
    auth = Auth(api_key=API_KEY, signature_secret=SECRET, signature_method=method)
    assert auth.check_signature(signed_sms_params(method=method)) is True


@pytest.mark.parametrize("method", HMAC_METHODS)
def test_wrong_secret_is_rejected_by_vonage_http_client_and_by_us(method):
    auth = Auth(api_key=API_KEY, signature_secret=SECRET, signature_method=method)
    params = signed_sms_params(secret=UNRELATED_SECRET, method=method)
    assert auth.check_signature(dict(params)) is False
    assert rejection(verify_sms, params, KEYRING, method, now=NOW).reason == "bad_sig"


# --- SMS API sig: accepted variations ----------------------------------------------------------------------


@pytest.mark.parametrize("method", SMS_SIGNATURE_METHODS)
def test_signed_sms_verifies(method):
    verify_sms(signed_sms_params(method=method), KEYRING, method, now=NOW)


def test_uppercase_sig_is_accepted():
    params = signed_sms_params()
    verify_sms({**params, "sig": params["sig"].upper()}, KEYRING, "sha256", now=NOW)


def test_reordered_dict_still_verifies():
    params = signed_sms_params()
    verify_sms(dict(reversed(list(params.items()))), KEYRING, "sha256", now=NOW)


def test_timestamp_at_window_edge_is_accepted():
    verify_sms(signed_sms_params(timestamp=NOW - 300), KEYRING, "sha256", now=NOW, window=300)


def test_sign_sms_keeps_given_timestamp_and_nonce_and_leaves_input_alone():
    params = {"a": "1", "timestamp": "1741944413", "nonce": "n-1"}
    signed = sign_sms(params, SECRET, "sha256")
    assert (signed["timestamp"], signed["nonce"], "sig" in params) == ("1741944413", "n-1", False)


# --- SMS API sig: one test per attack or broken request ----------------------------------------------------


@pytest.mark.parametrize("sig", [..., ""])
def test_missing_sig_is_rejected(sig):
    params = {key: value for key, value in signed_sms_params().items() if key != "sig"}
    if sig is not ...:
        params["sig"] = sig
    assert rejection(verify_sms, params, KEYRING, "sha256", now=NOW).reason == "missing_sig"


@pytest.mark.parametrize(
    "method, forge",
    [
        ("md5hash", lambda text: hashlib.md5(text.encode()).hexdigest()),
        ("md5", lambda text: hashlib.md5(text.encode()).hexdigest()),
        ("sha256", lambda text: hashlib.sha256(text.encode()).hexdigest()),
        ("sha256", lambda text: hmac.new(b"", text.encode(), hashlib.sha256).hexdigest()),
        ("sha256", lambda text: hmac.new(API_KEY.encode(), text.encode(), hashlib.sha256).hexdigest()),
    ],
    ids=["md5hash-no-secret", "md5-plain", "sha256-plain", "sha256-empty-key", "sha256-api-key-as-key"],
)
def test_sig_recomputed_without_the_secret_is_rejected(method, forge):
    params = {key: value for key, value in signed_sms_params(method=method).items() if key != "sig"}
    params["sig"] = forge(string_to_sign(sorted(params.items())))
    assert rejection(verify_sms, params, KEYRING, method, now=NOW).reason == "bad_sig"


def test_sig_over_unsorted_parameters_is_rejected():
    params = {key: value for key, value in signed_sms_params().items() if key != "sig"}
    params["sig"] = hmac.new(SECRET.encode(), string_to_sign(params.items()).encode(), hashlib.sha256).hexdigest()
    assert rejection(verify_sms, params, KEYRING, "sha256", now=NOW).reason == "bad_sig"


def test_altered_parameter_is_rejected():
    params = {**signed_sms_params(), "text": "Send me your PIN"}
    assert rejection(verify_sms, params, KEYRING, "sha256", now=NOW).reason == "bad_sig"


def test_duplicated_parameter_is_refused():
    query = urlencode(signed_sms_params()) + "&text=injected"
    with pytest.raises(DuplicateParameter):
        sms_params(query, b"", "")


@pytest.mark.parametrize("timestamp", [NOW - 301, NOW + 301, 0])
def test_stale_timestamp_is_rejected(timestamp):
    params = signed_sms_params(timestamp=timestamp)
    assert rejection(verify_sms, params, KEYRING, "sha256", now=NOW).reason == "stale_timestamp"


@pytest.mark.parametrize("timestamp", [..., "", "12.5", " 1741944413", "-1741944413", "+1741944413", "١٧٤١٩٤٤٤١٣"])
def test_missing_or_non_integer_timestamp_is_rejected(timestamp):
    params = {key: value for key, value in signed_sms_params().items() if key not in ("sig", "timestamp")}
    if timestamp is not ...:
        params["timestamp"] = timestamp
    params["sig"] = sms_params_signature(params, SECRET, "sha256")
    assert rejection(verify_sms, params, KEYRING, "sha256", now=NOW).reason == "missing_timestamp"


def test_sms_unknown_api_key_is_rejected():
    keyring = Keyring.from_config(None, f"other999={SECRET}")
    assert rejection(verify_sms, signed_sms_params(), keyring, "sha256", now=NOW).reason == "unknown_api_key"


def test_sms_previous_secret_is_accepted_during_rotation():
    keyring = Keyring.from_config(f"{SECRET},{PREVIOUS_SECRET}", None)
    verify_sms(signed_sms_params(secret=PREVIOUS_SECRET), keyring, "sha256", now=NOW)


def test_sms_unrelated_secret_is_rejected_during_rotation():
    keyring = Keyring.from_config(f"{SECRET},{PREVIOUS_SECRET}", None)
    params = signed_sms_params(secret=UNRELATED_SECRET)
    assert rejection(verify_sms, params, keyring, "sha256", now=NOW).reason == "bad_sig"


def test_sms_secret_is_chosen_by_api_key_parameter():
    keyring = Keyring.from_config(None, f"{API_KEY}={SECRET}; sub12345={UNRELATED_SECRET}")
    verify_sms(signed_sms_params(secret=UNRELATED_SECRET, api_key="sub12345"), keyring, "sha256", now=NOW)


def test_sms_signed_with_another_accounts_secret_is_rejected():
    keyring = Keyring.from_config(None, f"{API_KEY}={SECRET}; sub12345={UNRELATED_SECRET}")
    params = signed_sms_params(secret=UNRELATED_SECRET, api_key=API_KEY)
    assert rejection(verify_sms, params, keyring, "sha256", now=NOW).reason == "bad_sig"


@pytest.mark.parametrize("value", [1741944413, None, ["a"], {"a": "b"}])
def test_non_string_parameter_is_rejected(value):
    params = {**signed_sms_params(), "concat": value}
    assert rejection(verify_sms, params, KEYRING, "sha256", now=NOW).reason == "malformed_params"


def test_lone_surrogate_parameter_is_rejected():
    params = {**signed_sms_params(), "text": "\ud800"}
    assert rejection(verify_sms, params, KEYRING, "sha256", now=NOW).reason == "malformed_params"


def test_unknown_sms_method_is_a_configuration_error():
    with pytest.raises(ValueError):
        verify_sms(signed_sms_params(), KEYRING, "sha384", now=NOW)


# --- Properties: nothing but SignatureError escapes, whatever arrives ---------------------------------------

any_text = st.text(st.characters(exclude_categories=()))  # includes lone surrogates
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.just(10**400) | st.floats() | any_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=8,
)
token_like = st.text(alphabet="ABCabc0123456789-_=.+/ ", max_size=200)


@settings(database=None, deadline=None)
@given(authorization=st.none() | any_text | token_like.map("Bearer ".__add__), body=st.binary())
def test_verify_jwt_raises_only_signature_error_for_any_input(authorization, body):
    with pytest.raises(SignatureError):
        verify_jwt(authorization, body, KEYRING, now=NOW)


@settings(database=None, deadline=None)
@given(
    header=st.fixed_dictionaries({"alg": st.just("HS256") | json_values}, optional={"typ": json_values}),
    claims=st.fixed_dictionaries(
        {},
        optional={
            "iat": st.just(NOW) | json_values,
            "iss": st.just("Vonage") | json_values,
            "api_key": st.just(API_KEY) | json_values,
            "payload_hash": st.just(hashlib.sha256(BODY).hexdigest()) | json_values,
            "exp": json_values,
        },
    ),
    body=st.just(BODY) | st.binary(),
)
def test_verify_jwt_raises_only_signature_error_for_any_signed_claims(header, claims, body):
    try:
        assert verify_jwt(f"Bearer {forged_token(header, claims)}", body, KEYRING, now=NOW) == claims
    except SignatureError:
        pass


@settings(database=None, deadline=None)
@given(params=st.dictionaries(st.sampled_from(["sig", "timestamp", "api-key"]) | any_text, json_values | any_text))
def test_verify_sms_raises_only_signature_error_for_any_params(params):
    with pytest.raises(SignatureError):
        verify_sms(params, KEYRING, "md5hash", now=NOW)


@settings(database=None, deadline=None)
@given(
    params=st.dictionaries(any_text, any_text),
    timestamp=st.none() | st.just(str(NOW)) | any_text,
    method=st.sampled_from(SMS_SIGNATURE_METHODS),
)
def test_verify_sms_raises_only_signature_error_for_any_signed_params(params, timestamp, method):
    if timestamp is not None:
        params["timestamp"] = timestamp
    try:
        params["sig"] = sms_params_signature(params, SECRET, method)
    except UnicodeEncodeError:
        params["sig"] = "0" * 32
    try:
        verify_sms(params, KEYRING, method, now=NOW)
    except SignatureError:
        pass
