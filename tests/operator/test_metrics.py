"""/metrics: Prometheus text that parses, with callback counters and queue gauges."""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit import samples


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples_ = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            samples_[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples_


def value(metrics, name, **labels):
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_callbacks_and_show_the_backlog(client, vonage):
    before = scrape(client)
    payload = samples.message_status("delivered")
    vonage.status(payload)
    vonage.status(payload)
    client.post("/webhooks/message-status", data=b"{}", headers={"Authorization": "Bearer x.y.z"})
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("vonage_callbacks_total", kind="message-status", outcome="stored") == 1
    assert delta("vonage_callbacks_total", kind="message-status", outcome="duplicate") == 1
    assert delta("vonage_signature_rejections_total", reason="malformed_token") == 1
    assert delta("vonage_ack_seconds_count", kind="message-status") == 3
    assert value(after, "vonage_events", state="pending") == 1
    assert value(after, "vonage_oldest_pending_age_seconds") >= 0


def test_metrics_can_require_a_token(make_app):
    client = make_app(METRICS_TOKEN="scrape-token-Jk4Lm9Np2Qr7").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-token-Jk4Lm9Np2Qr7"}).status_code == 200


def test_metrics_can_be_turned_off(make_app):
    assert make_app(METRICS_ENABLED=False).test_client().get("/metrics").status_code == 404


TOKEN = "s3cret-scrape-token-Xy7Wv2Qp"


@pytest.mark.parametrize("header, code", [(f"bearer {TOKEN}", 200), (f"BEARER {TOKEN}", 200), (TOKEN, 401),
                                          ("Bearer wrong", 401), (f"Basic {TOKEN}", 401)])
def test_metrics_and_api_read_the_token_the_same_way(make_app, header, code):
    app = make_app(METRICS_TOKEN=TOKEN, ADMIN_TOKEN=TOKEN)
    client = app.test_client()
    assert client.get("/metrics", headers={"Authorization": header}).status_code == code
    assert client.get("/api/events", headers={"Authorization": header}).status_code == code
