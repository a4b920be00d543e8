"""E019 / W013: a Pub/Sub broker without a usable project id, and a send bound beyond PUBLISH_TIMEOUT.

The brokers are built here without touching the network (topics are made on first use).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks

from django_messenger.brokers.pubsub import PubSubBroker
from django_messenger.checks import check_pubsub
from django_messenger.transports.dramatiq.binding import binding


@pytest.fixture
def pubsub(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the binding's broker a PubSubBroker built with ``options``."""

    def use(**options: Any) -> PubSubBroker:
        broker = PubSubBroker(middleware=[], **options)
        monkeypatch.setattr(binding, "_broker", broker)
        return broker

    return use


def ids(found: list[checks.CheckMessage]) -> list[str]:
    return [message.id or "" for message in found]


def test_a_project_id_and_messengers_publish_timeout_pass(pubsub: Any) -> None:
    pubsub(project_id="my-project")

    assert check_pubsub() == []


def test_a_legacy_domain_scoped_project_id_passes(pubsub: Any) -> None:
    pubsub(project_id="example.com:my-project")

    assert check_pubsub() == []


def test_no_pubsub_check_on_other_brokers() -> None:
    assert check_pubsub() == []


@pytest.mark.parametrize("project_id", [None, "", "My_Project", "abc"])
def test_e019_a_project_id_google_cloud_refuses(pubsub: Any, project_id: Any) -> None:
    pubsub(project_id=project_id)

    found = check_pubsub()

    assert ids(found) == ["django_messenger.E019"]
    assert "project_id" in found[0].msg and found[0].obj == "DRAMATIQ_BROKER"


def test_w013_a_publish_timeout_longer_than_messengers(pubsub: Any, settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "PUBLISH_TIMEOUT": 2.0}
    pubsub(project_id="my-project", publish_timeout=3.0)

    found = check_pubsub()

    assert ids(found) == ["django_messenger.W013"]
    assert "3 s" in found[0].msg and "2 s" in found[0].msg


def test_a_publish_timeout_within_messengers_passes(pubsub: Any, settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "PUBLISH_TIMEOUT": 2.0}
    pubsub(project_id="my-project", publish_timeout=2.0)

    assert check_pubsub() == []
