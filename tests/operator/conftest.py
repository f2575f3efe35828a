"""The `flask vonage` commands' shared pieces: the application Vonage holds for this deployment (in the
simulator, with the older tests' credentials: tests/fake_vonage.py) and an app that can reach it."""
import pytest

from tests.fake_vonage import DEFAULT_API_KEY, DEFAULT_API_SECRET

APP_ID = "5c1f8e2a-93d4-4b7e-a0c6-2f9d8e1b7a43"


def application(base, name="acme-messaging-prod"):
    app = {
        "id": APP_ID,
        "capabilities": {"messages": {"version": "v1", "webhooks": {
            "inbound_url": {"address": f"{base}/webhooks/inbound-message", "http_method": "POST"},
            "status_url": {"address": f"{base}/webhooks/message-status", "http_method": "POST"},
        }}},
    }
    return {**app, "name": name} if name else app


@pytest.fixture
def vonage_app(make_app):
    """An app with Vonage API credentials and an application id."""
    return make_app(VONAGE_API_KEY=DEFAULT_API_KEY, VONAGE_API_SECRET=DEFAULT_API_SECRET,
                    VONAGE_APPLICATION_ID=APP_ID)
