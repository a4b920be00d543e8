"""E014 / W011: a transport's queue_type (quorum queues) that cannot work, or a cluster on classic queues."""

from __future__ import annotations

from typing import Any

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from django_messenger.checks import check_queue_types
from django_messenger.transports.dramatiq.binding import binding

ONE_HOST = "amqp://guest:guest@rabbit-1:5672/%2F?heartbeat=30&blocked_connection_timeout=10"
TWO_HOSTS = ONE_HOST + ";" + ONE_HOST.replace("rabbit-1", "rabbit-2")


@pytest.fixture
def rabbitmq(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the binding's broker a RabbitmqBroker (built, never connected)."""

    def use(url: str = ONE_HOST, **options: Any) -> None:
        broker = RabbitmqBroker(url=url, confirm_delivery=True, middleware=[], **options)
        monkeypatch.setattr(binding, "_broker", broker)

    return use


def messenger(settings: Any, **transports: dict[str, str]) -> None:
    settings.MESSENGER = {"DEFAULT_TRANSPORT": "async", "TRANSPORTS": transports}


def ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def test_quorum_on_a_single_rabbitmq_url_is_quiet(settings: Any, rabbitmq: Any) -> None:
    rabbitmq()
    messenger(settings, **{"async": {"queue_name": "work", "queue_type": "quorum"}})

    assert check_queue_types() == []


def test_e014_a_queue_type_that_is_neither(settings: Any, rabbitmq: Any) -> None:
    rabbitmq()
    messenger(settings, **{"async": {"queue_name": "work", "queue_type": "Quorum"}})

    errors = check_queue_types()

    assert ids(errors) == ["django_messenger.E014"]
    assert "MESSENGER['TRANSPORTS']['async']['queue_type'] is 'Quorum'" in errors[0].msg
    assert "'classic' or 'quorum'" in errors[0].hint


def test_e014_quorum_on_a_broker_that_is_not_rabbitmq(settings: Any) -> None:
    # The unit tests' broker is Dramatiq's StubBroker
    messenger(settings, **{"async": {"queue_name": "work", "queue_type": "quorum"}})

    errors = check_queue_types()

    assert ids(errors) == ["django_messenger.E014"]
    assert "StubBroker" in errors[0].msg
    assert "RabbitMQ's" in errors[0].msg


def test_classic_on_another_broker_is_quiet(settings: Any) -> None:
    messenger(settings, **{"async": {"queue_name": "work", "queue_type": "classic"}})

    assert check_queue_types() == []


def test_e014_quorum_queues_with_priorities(settings: Any, rabbitmq: Any) -> None:
    rabbitmq(max_priority=10)
    messenger(settings, **{"async": {"queue_name": "work", "queue_type": "quorum"}})

    errors = check_queue_types()

    assert ids(errors) == ["django_messenger.E014"]
    assert "max_priority=10" in errors[0].msg
    assert "Remove max_priority" in errors[0].hint


def test_e014_one_queue_for_transports_of_two_queue_types(settings: Any, rabbitmq: Any) -> None:
    # Given "other" as the queue of a classic transport, and the own queue_name of a handler
    # routed to a quorum transport (tests.testapp.handlers.handle_everything)
    rabbitmq()
    messenger(
        settings,
        **{"async": {"queue_name": "work", "queue_type": "quorum"}, "bulk": {"queue_name": "other"}},
    )

    errors = check_queue_types()

    assert ids(errors) == ["django_messenger.E014"]
    assert "'other'" in errors[0].msg
    assert "'async' (quorum), 'bulk' (classic)" in errors[0].msg


def test_w011_classic_queues_on_a_cluster(settings: Any, rabbitmq: Any) -> None:
    rabbitmq(url=TWO_HOSTS)
    messenger(settings, **{"async": {"queue_name": "work"}})

    warnings = check_queue_types()

    assert ids(warnings) == ["django_messenger.W011"]
    assert "2 hosts" in warnings[0].msg
    assert "'async'" in warnings[0].msg
    assert "queue_type" in warnings[0].hint


def test_quorum_queues_on_a_cluster_are_quiet(settings: Any, rabbitmq: Any) -> None:
    rabbitmq(url=TWO_HOSTS)
    messenger(settings, **{"async": {"queue_name": "work", "queue_type": "quorum"}})

    assert check_queue_types() == []
