"""E010 / W003 / W004: the delay hop, and retries that would wait longer than a hop on RabbitMQ."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from django_messenger.checks import check_delays
from django_messenger.transports.dramatiq.binding import binding

URL = "amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=30&blocked_connection_timeout=10"


@pytest.fixture
def rabbitmq(monkeypatch: pytest.MonkeyPatch) -> None:
    """The binding's broker is a RabbitmqBroker with Dramatiq's default middleware (Retries included).

    It holds the handlers' actors that the app declared on the test broker.
    """
    rabbitmq = RabbitmqBroker(url=URL, confirm_delivery=True)
    rabbitmq.actors = dict(binding.broker.actors)
    monkeypatch.setattr(binding, "_broker", rabbitmq)


@pytest.fixture
def hop(settings: Any) -> Any:
    def use(value: Any) -> None:
        settings.MESSENGER = {**settings.MESSENGER, "DELAY_HOP": value}

    return use


def by_id(found: list[checks.CheckMessage]) -> dict[str, list[checks.CheckMessage]]:
    grouped: dict[str, list[checks.CheckMessage]] = {}
    for message in found:
        grouped.setdefault(message.id or "", []).append(message)
    return grouped


@pytest.mark.parametrize("value", [0, -5, "soon", None, float("nan"), float("inf")])
def test_e010_a_delay_hop_that_is_not_a_positive_number(hop: Any, value: Any) -> None:
    hop(value)

    [error] = check_delays()

    assert error.id == "django_messenger.E010"
    assert error.level == checks.ERROR
    assert "DELAY_HOP" in error.msg


def test_the_default_hop_passes_on_rabbitmq(rabbitmq: None) -> None:
    # messenger's default max_backoff (5 min) is under the default hop (10 min)
    assert check_delays() == []


def test_w003_a_handler_whose_max_backoff_is_longer_than_the_hop_on_rabbitmq(
    rabbitmq: None, hop: Any
) -> None:
    # Given a 60 s hop: the default max_backoff (300 s) is longer; flaky's (20 ms) is not
    hop(60)

    warnings = by_id(check_delays())

    assert set(warnings) == {"django_messenger.W003"}
    objects = {warning.obj for warning in warnings["django_messenger.W003"]}
    assert "tests.testapp.handlers.handle" in objects
    assert "tests.testapp.handlers.flaky" not in objects
    [ping] = [warning for warning in warnings["django_messenger.W003"] if warning.obj.endswith(".handle")]
    assert ping.level == checks.WARNING
    assert "max_backoff" in ping.hint and "60000" in ping.hint


def test_no_w003_on_a_broker_without_a_consumer_timeout(hop: Any) -> None:
    # The StubBroker (like Redis) holds a delayed retry as long as it must
    hop(60)

    assert check_delays() == []


def test_w004_a_hop_as_long_as_rabbitmqs_consumer_timeout(rabbitmq: None, hop: Any) -> None:
    hop(1800)

    warnings = by_id(check_delays())

    assert set(warnings) == {"django_messenger.W004"}
    assert "consumer_timeout" in warnings["django_messenger.W004"][0].msg
