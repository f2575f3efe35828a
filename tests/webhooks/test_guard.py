"""receiver.webhooks.guard: signature verification on the request path. Forged callbacks get 401 (missing
token 503) and are never stored; configuration fails closed; rejections are visible."""
import base64
import json
import threading
import time

import pytest
from sqlalchemy import event, select

from devkit import samples
from receiver.platform.config import ConfigError
from receiver.storage import get_storage
from receiver.storage.schema import events
from receiver.webhooks.signatures import sign_jwt, sign_sms
from tests.conftest import ADMIN_TOKEN, API_KEY, PATHS, SECRET, Vonage, compact

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def stored_count(app) -> int:
    with get_storage(app).engine.connect() as conn:
        return len(conn.execute(select(events.c.id)).all())


def b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.fixture
def status_body():
    return compact(samples.message_status("delivered", "whatsapp"))


# -- Messages API (JWT) ------------------------------------------------------------------------------
def forged_tokens(body: bytes) -> dict[str, str]:
    good = sign_jwt(body, SECRET, api_key=API_KEY)
    header, claims, sig = good.split(".")
    claim_values = json.loads(base64.urlsafe_b64decode(claims + "=="))
    return {
        "wrong_secret": sign_jwt(body, "some-other-secret-0123456789", api_key=API_KEY),
        "replayed_onto_other_body": sign_jwt(b'{"message_uuid":"other"}', SECRET, api_key=API_KEY),
        "alg_none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{claims}.",
        "rs256_header": f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{claims}.{sig}",
        "truncated": good[: len(good) - 10],
        "iat_in_future": sign_jwt(body, SECRET, api_key=API_KEY, iat=int(time.time()) + 3600),
        "claims_swapped": f"{header}.{b64(dict(claim_values, api_key='x'))}.{sig}",
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize("kind", ["message-status", "inbound-message"])
@pytest.mark.parametrize(
    "attack",
    ["wrong_secret", "replayed_onto_other_body", "alg_none", "rs256_header", "truncated", "iat_in_future",
     "claims_swapped", "garbage"],
)
def test_forged_messages_callback_is_401_and_not_stored(app, client, status_body, kind, attack):
    token = forged_tokens(status_body)[attack]
    response = client.post(PATHS[kind], data=status_body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.get_json()["error"]
    assert stored_count(app) == 0


def test_altered_body_with_the_original_token_is_401(app, vonage, status_body):
    token = sign_jwt(status_body, SECRET, api_key=API_KEY)
    altered = status_body.replace(b"delivered", b"read")
    assert vonage.status(None, body=altered, token=token).status_code == 401
    assert stored_count(app) == 0


def test_unknown_api_key_is_401(make_app, status_body):
    app = make_app(VONAGE_API_KEY=API_KEY)  # the secret now belongs to this key alone
    response = Vonage(app.test_client(), api_key="someone-else").status(None, body=status_body)
    assert response.status_code == 401 and response.get_json()["error"] == "unknown_api_key"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc"])
def test_missing_token_is_503_so_vonage_retries(app, client, status_body, header):
    headers = {} if header is None else {"Authorization": header}
    response = client.post(PATHS["message-status"], data=status_body, headers=headers)
    assert response.status_code in (401, 503)
    if header in (None, "", "Bearer", "Bearer "):
        assert response.status_code == 503 and response.get_json()["error"] == "missing_token"
    assert stored_count(app) == 0


def test_previous_secret_is_accepted_during_rotation(make_app, status_body):
    app = make_app(VONAGE_SIGNATURE_SECRET=f"new-secret-abcdefghijklmnop,{SECRET}")
    assert Vonage(app.test_client(), secret=SECRET).status(None, body=status_body).status_code == 200
    third = Vonage(app.test_client(), secret="third-secret-abcdefghijklmnop")
    assert third.status(None, body=status_body).status_code == 401


def test_several_accounts_each_with_their_secret(make_app, status_body):
    app = make_app(VONAGE_SIGNATURE_SECRET=None, VONAGE_SIGNATURE_SECRETS="key-one=secret-one-abcdefghijkl;key-two=secret-two-abcdefghijkl")
    client = app.test_client()
    assert Vonage(client, secret="secret-one-abcdefghijkl", api_key="key-one").status(None, body=status_body).status_code == 200
    assert Vonage(client, secret="secret-two-abcdefghijkl", api_key="key-two").inbound(samples.inbound_message()).status_code == 200
    assert Vonage(client, secret="secret-one-abcdefghijkl", api_key="key-two").inbound(samples.inbound_message()).status_code == 401


def test_payload_hash_of_compact_reserialisation_is_accepted(app, vonage):
    payload = samples.message_status("read", "whatsapp")
    pretty = json.dumps(payload, indent=2).encode()
    token = sign_jwt(compact(payload), SECRET, api_key=API_KEY)  # hash over the compact form
    assert vonage.status(None, body=pretty, token=token).status_code == 200


# -- SMS API (sig) -----------------------------------------------------------------------------------
def signed(params, **kw):
    return sign_sms(dict(params, **{"api-key": API_KEY}), SECRET, "sha256", **kw)


def query(params) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


@pytest.mark.parametrize("kind", ["inbound-sms", "delivery-receipt"])
def test_sms_without_sig_is_401(app, client, kind):
    params = dict(samples.inbound_sms(), **{"api-key": API_KEY})
    response = client.get(PATHS[kind] + "?" + query(params))
    assert response.status_code == 401 and response.get_json()["error"] == "missing_sig"
    assert stored_count(app) == 0


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: dict(p, sig=sign_sms({k: v for k, v in p.items() if k != "sig"}, "", "sha256")["sig"]),  # no secret
        lambda p: dict(p, text="I changed the text"),
        lambda p: dict(p, sig=p["sig"][:-2]),
        lambda p: dict(p, sig="0" * 64),
    ],
    ids=["recomputed_without_secret", "altered_param", "truncated_sig", "zero_sig"],
)
def test_sms_with_a_wrong_sig_is_401(app, client, tamper):
    params = tamper(signed(samples.inbound_sms()))
    response = client.get(PATHS["inbound-sms"] + "?" + query(params))
    assert response.status_code == 401 and response.get_json()["error"] == "bad_sig"
    assert stored_count(app) == 0


def test_sms_stale_timestamp_is_401(app, client):
    params = signed(samples.delivery_receipt(), timestamp=int(time.time()) - 3600)
    response = client.post(PATHS["delivery-receipt"], data=query(params), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 401 and response.get_json()["error"] == "stale_timestamp"


def test_sms_duplicated_parameter_is_401(app, client):
    params = signed(samples.inbound_sms())
    response = client.get(PATHS["inbound-sms"] + "?" + query(params) + "&text=injected")
    assert response.status_code == 401 and response.get_json()["error"] == "duplicate_param"
    assert stored_count(app) == 0


def test_sms_json_with_a_repeated_key_is_refused_like_a_repeated_parameter(client, storage):
    from receiver.webhooks.signatures import sign_sms
    from tests.conftest import SECRET, SMS_METHOD

    params = sign_sms(dict(samples.delivery_receipt("delivered"), **{"api-key": "a1b2c3d4"}), SECRET, SMS_METHOD)
    body = compact(params)[:-1] + b',"status":"failed"}'  # status twice: which one did the sig cover?
    response = client.post("/webhooks/delivery-receipt", data=body, content_type="application/json")
    assert response.status_code == 401 and response.get_json()["error"] == "duplicate_param"
    assert storage.reads.events() == []


def test_sms_parameter_order_does_not_matter(app, client):
    params = signed(samples.inbound_sms())
    reordered = dict(reversed(list(params.items())))
    assert client.get(PATHS["inbound-sms"] + "?" + query(reordered)).status_code == 200


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
def test_every_sms_signature_method(make_app, method):
    app = make_app(VONAGE_SIGNATURE_METHOD=method)
    sender = Vonage(app.test_client(), method=method)
    assert sender.sms("delivery-receipt", samples.delivery_receipt(), via="json").status_code == 200
    wrong = Vonage(app.test_client(), method="sha1" if method != "sha1" else "md5")
    assert wrong.sms("delivery-receipt", samples.delivery_receipt(), via="json").status_code == 401


def test_sms_probe_still_answers_200_with_signing_on(client):
    assert client.get(PATHS["inbound-sms"]).status_code == 200


# -- modes and startup -------------------------------------------------------------------------------
def test_jwt_only_mode_accepts_unsigned_sms_but_not_unsigned_messages(make_app, status_body):
    app = make_app(SIGNATURE_VERIFICATION="jwt-only")
    sender = Vonage(app.test_client())
    assert sender.sms("inbound-sms", samples.inbound_sms(), sign=False).status_code == 200
    assert app.test_client().post(PATHS["message-status"], data=status_body).status_code == 503


def test_verification_off_must_be_explicit_and_is_logged(make_app, status_body, caplog):
    app = make_app(SIGNATURE_VERIFICATION="off", VONAGE_SIGNATURE_SECRET=None)
    assert "NOT verified" in caplog.text
    assert app.test_client().post(PATHS["message-status"], data=status_body).status_code == 200


def test_unknown_verification_mode_refuses_to_start(make_app):
    with pytest.raises(ConfigError, match="SIGNATURE_VERIFICATION"):
        make_app(SIGNATURE_VERIFICATION="maybe")


def test_unknown_sms_signature_method_refuses_to_start(make_app):
    with pytest.raises(ConfigError, match="VONAGE_SIGNATURE_METHOD"):
        make_app(VONAGE_SIGNATURE_METHOD="sha384")


def test_production_without_a_secret_refuses_to_start(make_app):
    with pytest.raises(ConfigError, match="VONAGE_SIGNATURE_SECRET is not set"):
        make_app(VONAGE_SIGNATURE_SECRET=None, APP_ENV="production")


def test_development_generates_one_secret_and_keeps_it(make_app, capsys, status_body):
    app = make_app(VONAGE_SIGNATURE_SECRET=None, APP_ENV="development")
    printed = capsys.readouterr().out
    with open(f"{app.instance_path}/dev-signature-secret", encoding="utf-8") as f:
        secret = f.read().strip()
    assert "Development signature secret generated" in printed and secret not in printed
    again = make_app(VONAGE_SIGNATURE_SECRET=None, APP_ENV="development")
    assert "generated" not in capsys.readouterr().out
    assert Vonage(again.test_client(), secret=secret).status(None, body=status_body).status_code == 200


# -- visibility and proxies --------------------------------------------------------------------------
def test_rejections_are_visible_in_the_api_and_cli(app, client, runner, status_body):
    client.post(PATHS["message-status"], data=status_body, headers={"Authorization": "Bearer nope"})
    client.get(PATHS["inbound-sms"] + "?msisdn=1&messageId=x")
    reasons = [r["reason"] for r in client.get("/api/rejections", headers=AUTH).get_json()["rejections"]]
    assert reasons == ["missing_sig", "malformed_token"]
    output = runner.invoke(args=["events", "rejected"]).output
    assert "missing_sig" in output and "malformed_token" in output and "/webhooks/inbound-sms" in output


def test_rejection_log_is_bounded(make_app):
    app = make_app(REJECTIONS_KEPT=10, PROXY_FIX_HOPS=1)
    client = app.test_client()
    for n in range(120):  # from 120 addresses: a row each
        client.get(PATHS["inbound-sms"] + "?messageId=x", headers={"X-Forwarded-For": f"203.0.113.{n}"})
    kept = client.get("/api/rejections", headers=AUTH, query_string={"limit": 1000}).get_json()["rejections"]
    assert len(kept) == 10
    assert [r["remote_addr"] for r in kept] == [f"203.0.113.{n}" for n in range(119, 109, -1)]


def test_a_flood_of_forgeries_is_counted_in_a_few_rows_not_a_write_each(make_app, status_body):
    """Every refused request is counted, but those of one second, reason, address and path share a row,
    written with the others of that second: a flood costs the database a few rows, not a write each."""
    app = make_app(PROXY_FIX_HOPS=1)
    client = app.test_client()
    storage = get_storage(app)
    inserts = []  # (the thread writing, how many rows)
    for engine in (storage.engine, storage.bookkeeping):
        event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, params, *_: inserts.append(
            (threading.current_thread().name, len(params))) if statement.startswith("INSERT INTO rejections") else None)
    for n in range(300):
        client.post(PATHS["message-status"], data=status_body, headers={"Authorization": "Bearer nope",
                                                                        "X-Forwarded-For": f"198.51.100.{n % 3}"})
    assert all(name == "receiver-rejections" for name, _ in inserts)  # nothing written on the request path
    kept = client.get("/api/rejections", headers=AUTH, query_string={"limit": 1000}).get_json()["rejections"]
    assert sum(r["count"] for r in kept) == 300
    assert len(kept) <= 3 * 3  # three addresses, over at most three seconds
    assert 1 <= len(inserts) <= 3  # one statement a second
    assert storage.reads.rejections_by_reason(0) == {"malformed_token": 300}


def test_rejections_from_more_addresses_than_a_flush_holds_are_merged(make_app):
    from receiver.storage.rejections import MAX_KEYS, OTHERS

    app = make_app(PROXY_FIX_HOPS=1)
    client = app.test_client()
    written = []  # the rows of each flush
    event.listen(get_storage(app).bookkeeping, "before_cursor_execute", lambda conn, cursor, statement, params, *_:
                 written.append(len(params)) if statement.startswith("INSERT INTO rejections") else None)
    for n in range(MAX_KEYS + 300):
        client.get(PATHS["inbound-sms"] + "?messageId=x", headers={"X-Forwarded-For": f"10.0.{n // 256}.{n % 256}"})
    kept = get_storage(app).reads.rejections(limit=10_000)
    assert sum(r["count"] for r in kept) == MAX_KEYS + 300
    assert written and max(written) <= MAX_KEYS + 2  # past MAX_KEYS, one merged row per second
    assert any(r["remote_addr"] == OTHERS for r in kept)


def test_secrets_never_appear_in_rejections(app, client, status_body):
    token = sign_jwt(status_body + b" ", SECRET, api_key=API_KEY)
    client.post(PATHS["message-status"], data=status_body, headers={"Authorization": f"Bearer {token}"})
    text = json.dumps(client.get("/api/rejections", headers=AUTH).get_json())
    assert SECRET not in text and token not in text


@pytest.mark.parametrize("hops,expected", [(0, "127.0.0.1"), (1, "203.0.113.7")])
def test_proxy_hops_decide_which_client_address_is_trusted(make_app, hops, expected):
    app = make_app(PROXY_FIX_HOPS=hops)
    client = app.test_client()
    client.get(PATHS["inbound-sms"] + "?messageId=x", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    (rejection,) = client.get("/api/rejections", headers=AUTH).get_json()["rejections"]
    assert rejection["remote_addr"] == expected
