"""receiver.kinds: the one table of callback kinds agrees with every place that serves, parses or signs them."""
from __future__ import annotations

import pytest

from receiver.kinds import KINDS
from receiver.operator.applications import webhook_urls
from schemas import SCHEMAS, TEST_MARKS


def test_every_kind_is_served_at_its_path_with_its_methods(app):
    rules = {rule.rule: rule.methods - {"HEAD", "OPTIONS"} for rule in app.url_map.iter_rules()}
    for kind in KINDS.values():
        assert rules[kind.path] == set(kind.methods), kind.name


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_has_a_schema_a_test_mark_and_a_url_setting(name):
    kind = KINDS[name]
    assert name in SCHEMAS
    assert kind.transport.test_mark in TEST_MARKS
    assert webhook_urls("https://receiver.example")[kind.url_setting] == "https://receiver.example" + kind.path


def test_a_kinds_natural_key_starts_with_its_message_id():
    """The first key field is the message's id (storage indexes events by it), a status kind's second its status."""
    for kind in KINDS.values():
        assert kind.key[0] in ("message_uuid", "messageId")
        assert kind.required == (2 if kind.event == "status" else 1)
        assert kind.event != "status" or kind.key[1] == "status"
