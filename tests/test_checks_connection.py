"""W001 / W002: RabbitMQ connection settings that can leave connections hanging."""

from __future__ import annotations

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from django_messenger.checks import check_broker
from django_messenger.transports.dramatiq.binding import binding


@pytest.fixture
def rabbitmq_broker(monkeypatch):
    def use(url: str) -> None:
        monkeypatch.setattr(binding, "_broker", RabbitmqBroker(url=url, confirm_delivery=True, middleware=[]))

    return use


def ids() -> set[str]:
    return {message.id for message in check_broker()}


def test_heartbeats_off_is_w001(rabbitmq_broker):
    rabbitmq_broker("amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=0&blocked_connection_timeout=10")

    assert ids() == {"django_messenger.W001"}


def test_no_blocked_connection_timeout_is_w002(rabbitmq_broker):
    rabbitmq_broker("amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=30")

    assert ids() == {"django_messenger.W002"}


def test_both_set_is_quiet(rabbitmq_broker):
    rabbitmq_broker("amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=30&blocked_connection_timeout=10")

    assert ids() == set()


@pytest.mark.parametrize("publisher", ["pipelined", "per-thread", "carrier-pigeon"])
def test_the_removed_publisher_key_is_e009_whatever_its_value(settings, publisher):
    from django_messenger.checks import check_routing

    # Given a MESSENGER setting that still names the removed PUBLISHER key
    settings.MESSENGER = {**settings.MESSENGER, "PUBLISHER": publisher}

    # When the checks run, Then E009 says to remove it
    [error] = check_routing()
    assert error.id == "django_messenger.E009"
    assert "PUBLISHER" in error.msg and "Remove" in (error.hint or "")


def test_no_publisher_key_is_no_e009(settings):
    from django_messenger.checks import check_routing

    settings.MESSENGER = {key: value for key, value in settings.MESSENGER.items() if key != "PUBLISHER"}

    assert check_routing() == []
