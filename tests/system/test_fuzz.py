"""Nothing the app receives can make it answer 500, nothing unsigned is ever stored, and nothing a
signed callback holds stops the worker.

Property-based: arbitrary methods, headers, bodies, encodings, query strings and tokens at every
route; and signed callbacks of any shape through the worker. FUZZ_EXAMPLES (default 1,000 per
route) sets how hard it tries.
"""
import json
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from devkit import samples
from receiver.storage import get_storage
from receiver.storage.schema import events
from receiver.webhooks.signatures import sign_jwt
from receiver.worker.loop import Worker
from tests.conftest import API_KEY, PATHS, SECRET, Vonage

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
ROUTES = list(PATHS.values()) + ["/healthz", "/readyz", "/api/events", "/api/events/1/replay", "/nope", "/webhooks/"]

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
tokens = st.one_of(
    header_text,
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", header_text, header_text, header_text),
    st.just("eyJhbGciOiJub25lIn0.eyJhcGlfa2V5IjoiYTFiMmMzZDQifQ."),
)
bodies = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=12,
    ).map(lambda v: __import__("json").dumps(v).encode()),
)
queries = st.one_of(
    st.just(""),
    st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=120),
    st.dictionaries(
        st.sampled_from(["msisdn", "to", "messageId", "text", "sig", "timestamp", "api-key", "concat-part", "x"]),
        st.text(max_size=20),
        max_size=6,
    ).map(lambda d: "&".join(f"{k}={v}" for k, v in d.items())),
)
requests_ = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
        "path": st.sampled_from(ROUTES),
        "query": queries,
        "body": bodies,
        "content_type": st.sampled_from(
            ["application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data", "",
             "application/json; charset=latin-1"]
        ),
        "authorization": st.one_of(st.none(), tokens.map(lambda t: f"Bearer {t}"), header_text),
        "extra": st.dictionaries(
            st.sampled_from(["X-Forwarded-For", "Content-Encoding", "Transfer-Encoding", "Accept", "X-Request-Id"]),
            header_text,
            max_size=3,
        ),
    }
)


def stored(app) -> int:
    with get_storage(app).engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar()


@settings(max_examples=EXAMPLES * 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(req=requests_)
def test_no_request_answers_500_or_stores_anything_unsigned(make_app, req):
    app = _app(make_app)
    headers = dict(req["extra"])
    if req["authorization"] is not None:
        headers["Authorization"] = req["authorization"]
    if req["content_type"]:
        headers["Content-Type"] = req["content_type"]
    before = stored(app)
    response = app.test_client().open(
        req["path"] + ("?" + req["query"] if req["query"] else ""),
        method=req["method"],
        data=req["body"],
        headers=headers,
    )
    assert response.status_code < 500 or response.status_code == 503
    if response.status_code == 503:
        assert response.get_json()["error"] in ("missing_token", "storage_unavailable")
    assert stored(app) == before, "nothing unsigned may be stored"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, kind=st.sampled_from(["message-status", "inbound-message"]))
def test_every_authentic_messages_callback_is_stored_whatever_its_shape(make_app, body, kind):
    app = _app(make_app)
    token = sign_jwt(body, SECRET, api_key=API_KEY)
    before = stored(app)
    response = app.test_client().post(PATHS[kind], data=body, headers={"Authorization": f"Bearer {token}"})
    if body.strip():
        assert response.status_code == 200
        assert stored(app) in (before, before + 1)  # +0 only for a repeat of an earlier example
    else:
        assert response.status_code == 400 and stored(app) == before


_apps = {}


def _app(make_app):
    # One app per test function: hypothesis calls the test body many times with the same fixtures.
    key = id(make_app)
    if key not in _apps:
        _apps.clear()
        _apps[key] = make_app()
    return _apps[key]


# -- past the HTTP layer: signed callbacks of any shape, through the worker -----------------------
def _field_values():
    nasty = st.sampled_from(["\x00", "\ud800", "\udfff", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00",
                             "x" * 300, "1e400", "-1", "0", "999999999999", "NaN", "", " "])
    scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | \
        st.text(max_size=30) | nasty
    return st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=3), max_leaves=8)


def _payloads(base):
    """A real sample with any of its fields replaced, dropped or added: the shapes Vonage never sends."""
    return st.builds(
        lambda changes, drop, extra: {**{k: v for k, v in base.items() if k not in drop}, **changes, **extra},
        st.dictionaries(st.sampled_from(sorted(base)), _field_values(), max_size=4),
        st.sets(st.sampled_from(sorted(base)), max_size=2),
        st.dictionaries(st.text(max_size=10), _field_values(), max_size=2),
    )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


SIGNED = st.one_of(
    st.tuples(st.just("message-status"), _payloads(samples.message_status("rejected", "whatsapp"))),
    st.tuples(st.just("inbound-message"), _payloads(samples.inbound_message("whatsapp", "location"))),
    st.tuples(st.just("inbound-message"), _payloads(samples.message_status("read", "messenger", version="v0.1"))),
    st.tuples(st.just("inbound-sms"), _payloads(samples.inbound_sms(**{"concat": "true", "concat-ref": "5",
                                                                       "concat-total": "2", "concat-part": "1"}))),
    st.tuples(st.just("delivery-receipt"), _payloads(samples.delivery_receipt("failed"))),
)


@settings(max_examples=max(50, EXAMPLES // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(SIGNED, min_size=1, max_size=5))
def test_signed_callbacks_of_any_shape_each_end_in_one_recorded_outcome(make_app, batch):
    app = _app(make_app)
    sender = Vonage(app.test_client())
    for kind, payload in batch:
        if kind in ("message-status", "inbound-message"):
            body = json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
            assert sender.messages(kind, None, body=body).status_code == 200
        else:
            params = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in payload.items()}
            # Nobody can sign a lone surrogate (the HMAC is over UTF-8): such a request is a 401 (test_signatures).
            assume(all(_encodable(k) and _encodable(v) for k, v in params.items()))
            assert sender.sms(kind, params, via="json").status_code == 200
    storage = get_storage(app)
    worker = Worker(storage, app.config, name="fuzz")
    worker.run_until_idle()  # returns: nothing a callback holds escapes the worker
    with storage.engine.connect() as conn:
        unsettled = conn.execute(select(func.count()).select_from(events).where(
            events.c.state.in_(("pending", "processing")))).scalar()
    assert unsettled == 0
    assert worker.held == set()
