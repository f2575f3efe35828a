"""receiver.sending.client against the simulator over real HTTP on loopback: its credentials, every
channel's body as built, how each answer from Vonage is classified, and sending with either form of the
private key. The body checks are test_bodies.py; the key's parsing, test_keys.py."""
import socket
import time
from email.utils import formatdate

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devkit.simulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, running_simulator
from receiver.sending.bodies import build_message
from receiver.sending.client import MessagesClient, SendError
from receiver.sending.keys import load_private_key, public_key_pem

APP_ID = "5c1f8e2a-93d4-4b7e-a0c6-2f9d8e1b7a43"
CUSTOMER = "447700900123"
OUR_NUMBER = "447700900456"
MEDIA = "https://cdn.acme.example/media/receipt-48213.png"


def pem_of(key, encryption=None):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption or serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def private_pem():
    return pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def other_pem():
    return pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def public_pem(private_pem):
    return public_key_pem(private_pem)


@pytest.fixture
def vonage(public_pem):
    # No receiver: callbacks are recorded as not sent, which these tests do not look at.
    with running_simulator(application_id=APP_ID, public_key=public_pem, callback_delay=0) as vonage:
        yield vonage


@pytest.fixture
def client(vonage, private_pem):
    return MessagesClient(APP_ID, private_pem, api_base=vonage.url)


def sms(**fields):
    return build_message("sms", to=CUSTOMER, from_="AcmeShop", text="Your order 48213 is ready", **fields)


def failed_send(client, body=None) -> SendError:
    with pytest.raises(SendError) as caught:
        client.send_message(body or sms())
    return caught.value


def unused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- auth ----------------------------------------------------------------------------------------------
def test_jwt_send_is_accepted_with_the_uuid_vonage_recorded(vonage, client):
    result = client.send_message(sms(client_ref="order-48213"))

    [sent] = vonage.sent
    assert (result.message_uuid, result.workflow_id, result.status) == (sent.message_uuid, None, 202)
    assert sent.body["client_ref"] == "order-48213"


def test_the_token_carries_the_claims_vonage_checks(vonage, client, private_pem):
    client.send_message(sms())

    [request] = vonage.requests_to("POST", "/v1/messages")
    scheme, token = request.headers["Authorization"].split(" ")
    claims = jwt.decode(token, public_key_pem(private_pem), algorithms=["RS256"])
    assert scheme == "Bearer" and jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims["application_id"] == APP_ID
    assert claims["exp"] - claims["iat"] == 300 and abs(claims["iat"] - time.time()) < 5


def test_each_send_has_a_token_of_its_own(vonage, client):
    client.send_message(sms())
    client.send_message(sms())

    tokens = [r.headers["Authorization"].split(" ")[1] for r in vonage.requests_to("POST", "/v1/messages")]
    assert len({jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}) == 2


@pytest.mark.parametrize("make_client, why", [
    pytest.param(lambda url, pem, other: MessagesClient(APP_ID, other, api_base=url),
                 "does not verify with the application's public key", id="wrong-key"),
    pytest.param(lambda url, pem, other: MessagesClient("another-application", pem, api_base=url),
                 "application_id is not this application", id="wrong-application"),
    pytest.param(lambda url, pem, other: MessagesClient(APP_ID, pem, api_base=url, token_ttl=-60),
                 "the token has expired", id="expired"),
])
def test_refused_tokens_are_permanent_and_say_what_to_check(vonage, private_pem, other_pem, make_client, why):
    error = failed_send(make_client(vonage.url, private_pem, other_pem))

    assert (error.kind, error.status) == ("permanent", 401)
    assert "check VONAGE_APPLICATION_ID and that the private key" in str(error)
    assert why in error.problem["detail"]
    assert vonage.sent == []


def test_basic_auth_sends_with_the_api_key_and_secret(vonage):
    result = MessagesClient(api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET,
                            api_base=vonage.url).send_message(sms())

    assert result.message_uuid == vonage.sent[0].message_uuid


def test_a_wrong_api_secret_is_named_but_never_shown(vonage):
    error = failed_send(MessagesClient(api_key=DEFAULT_API_KEY, api_secret="n0t-the-Secret", api_base=vonage.url))

    assert (error.kind, error.status) == ("permanent", 401)
    assert "check VONAGE_API_KEY and VONAGE_API_SECRET" in str(error)
    assert "n0t-the-Secret" not in str(error)


@pytest.mark.parametrize("arguments, fragment", [
    ({}, "VONAGE_APPLICATION_ID with VONAGE_PRIVATE_KEY"),
    ({"api_key": "a1b2c3d4"}, "VONAGE_API_KEY with VONAGE_API_SECRET"),
    ({"private_key": "-----BEGIN PRIVATE KEY-----"}, "VONAGE_APPLICATION_ID is required"),
])
def test_a_client_needs_one_complete_set_of_credentials(arguments, fragment):
    with pytest.raises(ValueError, match=fragment):
        MessagesClient(**arguments)


# -- every channel's body ------------------------------------------------------------------------------
WHATSAPP = {"to": CUSTOMER, "from_": OUR_NUMBER}
BODIES = {
    "sms-text": build_message("sms", to=CUSTOMER, from_="AcmeShop", text="Ready", ttl=900,
                              options={"encoding_type": "text"}, client_ref="order-48213"),
    "whatsapp-text-reply": build_message("whatsapp", **WHATSAPP, text="Yes, it is", reply_to="aaaaaaaa-1111"),
    "whatsapp-image": build_message("whatsapp", "image", **WHATSAPP, url=MEDIA, caption="Your receipt"),
    "whatsapp-audio": build_message("whatsapp", "audio", **WHATSAPP, url=MEDIA),
    "whatsapp-video": build_message("whatsapp", "video", **WHATSAPP, url=MEDIA, caption="How to open it"),
    "whatsapp-file": build_message("whatsapp", "file", **WHATSAPP, url=MEDIA, name="invoice.pdf"),
    "whatsapp-template": build_message(
        "whatsapp", "template", **WHATSAPP, template={"name": "order_ready", "parameters": ["48213"]},
        options={"locale": "en_GB", "policy": "deterministic"}),
    "whatsapp-sticker": build_message("whatsapp", "sticker", **WHATSAPP, url=MEDIA),
    "whatsapp-custom": build_message("whatsapp", "custom", **WHATSAPP,
                                     custom={"type": "location", "location": {"latitude": 51.5, "longitude": -0.1}}),
    "mms-image": build_message("mms", "image", to=CUSTOMER, from_=OUR_NUMBER, url=MEDIA, caption="Receipt", ttl=600),
    "mms-vcard": build_message("mms", "vcard", to=CUSTOMER, from_=OUR_NUMBER, url=MEDIA),
    "mms-audio": build_message("mms", "audio", to=CUSTOMER, from_=OUR_NUMBER, url=MEDIA),
    "mms-video": build_message("mms", "video", to=CUSTOMER, from_=OUR_NUMBER, url=MEDIA),
    "viber-text": build_message("viber_service", to=CUSTOMER, from_="16273", text="Ready", reply_to="bbbb-2222",
                                options={"category": "transaction", "ttl": 600}),
    "viber-image": build_message("viber_service", "image", to=CUSTOMER, from_="16273", url=MEDIA),
    "viber-video": build_message("viber_service", "video", to=CUSTOMER, from_="16273", url=MEDIA,
                                 options={"duration": "12", "file_size": "3"}),
    "viber-file": build_message("viber_service", "file", to=CUSTOMER, from_="16273", url=MEDIA, name="a.pdf"),
    "messenger-text": build_message("messenger", to="5671924083648192", from_="104395831203986", text="Ready",
                                    options={"category": "message_tag", "tag": "POST_PURCHASE_UPDATE"}),
    "messenger-image": build_message("messenger", "image", to="5671924083648192", from_="104395831203986", url=MEDIA),
    "messenger-audio": build_message("messenger", "audio", to="5671924083648192", from_="104395831203986", url=MEDIA),
    "messenger-video": build_message("messenger", "video", to="5671924083648192", from_="104395831203986", url=MEDIA),
    "messenger-file": build_message("messenger", "file", to="5671924083648192", from_="104395831203986", url=MEDIA),
    "rcs-text": build_message("rcs", to=CUSTOMER, from_="acme_rbm_agent", text="Ready", ttl=600),
    "rcs-image": build_message("rcs", "image", to=CUSTOMER, from_="acme_rbm_agent", url=MEDIA),
    "rcs-video": build_message("rcs", "video", to=CUSTOMER, from_="acme_rbm_agent", url=MEDIA),
    "rcs-file": build_message("rcs", "file", to=CUSTOMER, from_="acme_rbm_agent", url=MEDIA),
    "rcs-custom": build_message("rcs", "custom", to=CUSTOMER, from_="acme_rbm_agent",
                                custom={"contentMessage": {"text": "Pick a slot"}}),
    "whatsapp-with-sms-failover": build_message(
        "whatsapp", **WHATSAPP, text="Ready", webhook_version="v0.1",
        failover=[build_message("sms", to=CUSTOMER, from_="AcmeShop", text="Ready")]),
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_every_channel_and_type_is_accepted_as_built(vonage, client, body):
    result = client.send_message(body)

    [sent] = vonage.sent
    [request] = vonage.requests_to("POST", "/v1/messages")
    assert sent.body == body and request.json() == body
    assert result.workflow_id == sent.workflow_id and (result.workflow_id is not None) == ("failover" in body)


def test_whatsapp_replies_quote_the_message_answered():
    body = build_message("whatsapp", **WHATSAPP, text="Yes", reply_to="aaaaaaaa-1111")

    assert body["context"] == {"message_uuid": "aaaaaaaa-1111"}


def test_a_template_carries_its_locale_and_policy():
    body = BODIES["whatsapp-template"]

    assert body["template"] == {"name": "order_ready", "parameters": ["48213"]}
    assert body["whatsapp"] == {"locale": "en_GB", "policy": "deterministic"}


# -- outcomes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header, expected", [
    pytest.param(lambda: 7, 7.0, id="seconds"),
    pytest.param(lambda: formatdate(time.time() + 30, usegmt=True), 30.0, id="http-date"),
    pytest.param(lambda: None, None, id="absent"),
])
def test_429_is_retry_with_the_wait_vonage_asked_for(vonage, client, header, expected):
    vonage.set_fault("throttle", retry_after=header())

    error = failed_send(client)

    assert (error.kind, error.status) == ("retry", 429)
    if expected is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(expected, abs=2)
    assert "rate limiting" in str(error)


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_retry(vonage, client, status):
    vonage.set_fault("server_error", status=status)

    error = failed_send(client)

    assert (error.kind, error.status, error.retry_after) == ("retry", status, None)
    assert vonage.sent == []


@pytest.mark.parametrize("fault, fragments", [
    pytest.param({"code": "1120"}, ["(400, error 1120)", "Invalid sender", "`from` must be a number or ID"],
                 id="invalid-sender"),
    pytest.param({"code": "1340"}, ["error 1340", "send an approved template"], id="outside-window"),
    pytest.param({"code": "1020", "invalid_parameters": [{"name": "to", "reason": "Invalid value"}]},
                 ["(422, error 1020)", "invalid parameters: to (Invalid value)"], id="invalid-parameters"),
    pytest.param({"code": "1022"}, ["template's name, locale and parameters"], id="template"),
    pytest.param({"code": "1070"}, ["top up the account"], id="quota"),
    pytest.param({"code": "1050"}, ["barred", "do not retry"], id="barred"),
])
def test_4xx_is_permanent_keeps_the_problem_and_says_what_to_fix(vonage, client, fault, fragments):
    vonage.set_fault("problem", **fault)

    error = failed_send(client)

    assert error.kind == "permanent" and 400 <= error.status < 500
    assert error.problem["type"] == f"https://developer.nexmo.com/api-errors/messages#{fault['code']}"
    assert set(error.problem) >= {"type", "title", "detail", "instance"}
    for fragment in fragments:
        assert fragment in str(error)


def test_a_body_vonage_refuses_is_permanent_with_the_field_named(vonage, client):
    error = failed_send(client, {**sms(), "text": "x" * 1001})

    assert (error.kind, error.status) == ("permanent", 422)
    assert error.problem["invalid_parameters"] == [
        {"name": "text", "reason": "must be at most 1000 characters on sms, got 1001"}]
    assert "invalid parameters: text (must be at most 1000" in str(error)


def test_a_2xx_without_message_uuid_is_unknown(vonage, client):
    vonage.set_fault("problem", status=200, body={"queued": True})

    error = failed_send(client)

    assert (error.kind, error.status) == ("unknown", 200)
    assert "client_ref" in str(error)


def test_a_read_timeout_after_vonage_accepted_is_unknown(vonage, private_pem):
    vonage.set_fault("slow", seconds=2)
    client = MessagesClient(APP_ID, private_pem, api_base=vonage.url, read_timeout=0.2)

    error = failed_send(client, sms(client_ref="order-48213"))

    assert (error.kind, error.status) == ("unknown", None)
    assert "did not answer within 0.2s" in str(error) and "may have been accepted" in str(error)
    assert [m.body["client_ref"] for m in vonage.sent] == ["order-48213"]


@pytest.mark.parametrize("accept", [False, True])
def test_a_dropped_connection_is_unknown_and_never_resent(vonage, client, accept):
    vonage.set_fault("drop", accept=accept)

    error = failed_send(client)

    assert (error.kind, error.status) == ("unknown", None)
    assert "connection to Vonage broke" in str(error)
    assert len(vonage.requests_to("POST", "/v1/messages")) == 1
    assert len(vonage.sent) == int(accept)


def test_connection_refused_is_retry(private_pem):
    url = f"http://127.0.0.1:{unused_port()}"

    error = failed_send(MessagesClient(APP_ID, private_pem, api_base=url))

    assert (error.kind, error.status) == ("retry", None)
    assert f"Could not connect to Vonage at {url}/v1/messages (Connection refused)" in str(error)


def test_timeouts_are_always_set():
    client = MessagesClient(api_key="k", api_secret="s")

    assert client.timeout == (3.0, 10.0)


def test_the_token_never_appears_in_an_error(vonage, client):
    vonage.set_fault("problem", code="1120")

    error = failed_send(client)

    [request] = vonage.requests_to("POST", "/v1/messages")
    assert request.headers["Authorization"].split(" ")[1] not in str(error)


# -- the private key -----------------------------------------------------------------------------------
def test_a_one_line_key_with_literal_newlines_sends(vonage, private_pem):
    one_line = '"' + private_pem.strip().replace("\n", "\\n") + '"  '

    assert load_private_key(one_line) == private_pem
    assert MessagesClient(APP_ID, one_line, api_base=vonage.url).send_message(sms()).status == 202


def test_a_key_file_sends(vonage, private_pem, tmp_path):
    path = tmp_path / "private.key"
    path.write_text(private_pem)

    pem = load_private_key(path=str(path))

    assert MessagesClient(APP_ID, pem, api_base=vonage.url).send_message(sms()).status == 202
