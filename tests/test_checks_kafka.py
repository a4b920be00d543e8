"""E018 / W012 / W018: a Kafka broker set to lose the at-least-once guarantee, smaller than
MAX_MESSAGE_SIZE, or creating topics of one replica.

The brokers are built here without touching the network (the producer and topics are made on first use).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks

from django_messenger.brokers.kafka import KafkaBroker
from django_messenger.checks import KAFKA_MESSAGE_ALLOWANCE, check_kafka
from django_messenger.transports.dramatiq.binding import binding

FITS = 1_000_000 - KAFKA_MESSAGE_ALLOWANCE  # a MAX_MESSAGE_SIZE that the default max_message_size takes


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Any:
    """Make the binding's broker a KafkaBroker, with MAX_MESSAGE_SIZE within what it takes unless told."""
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": FITS}

    def use(**options: Any) -> KafkaBroker:
        broker = KafkaBroker(bootstrap_servers="127.0.0.1:9", middleware=[], **options)
        monkeypatch.setattr(binding, "_broker", broker)
        return broker

    return use


def ids(found: list[checks.CheckMessage]) -> list[str]:
    return [message.id or "" for message in found]


def test_the_broker_s_defaults_pass(kafka: Any) -> None:
    kafka()
    assert check_kafka() == []


def test_no_kafka_check_on_other_brokers(settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 0}
    assert check_kafka() == []


@pytest.mark.parametrize(
    "producer_config",
    [{"acks": 1}, {"acks": "1"}, {"enable.idempotence": False}, {"enable.idempotence": "false"}],
)
def test_e018_a_producer_that_does_not_wait_for_every_replica_or_is_not_idempotent(
    kafka: Any, producer_config: dict[str, Any]
) -> None:
    kafka(producer_config=producer_config)
    found = check_kafka()
    assert ids(found) == ["django_messenger.E018"]
    assert "producer_config" in found[0].msg and found[0].obj == "DRAMATIQ_BROKER"


@pytest.mark.parametrize("acks", ["all", "-1", -1])
def test_acks_all_in_any_spelling_passes(kafka: Any, acks: Any) -> None:
    kafka(producer_config={"acks": acks})
    assert check_kafka() == []


def test_e018_on_the_producer_is_accepted_when_confirmed_delivery_is_turned_off(
    kafka: Any, settings: Any
) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "CONFIRM_DELIVERY": False}
    kafka(producer_config={"acks": 1})
    assert check_kafka() == []


@pytest.mark.parametrize("key", ["enable.auto.commit", "enable.auto.offset.store"])
def test_e018_consumers_that_commit_before_the_handler_ran(kafka: Any, settings: Any, key: str) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "CONFIRM_DELIVERY": False}  # not an excuse on this side
    kafka(consumer_config={key: True})
    found = check_kafka()
    assert ids(found) == ["django_messenger.E018"]
    assert key in found[0].msg


def test_w012_a_max_message_size_the_broker_refuses(kafka: Any, settings: Any) -> None:
    kafka()
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": FITS + 1}
    found = check_kafka()
    assert ids(found) == ["django_messenger.W012"]
    assert str(FITS) in found[0].hint


def test_w012_no_limit_at_all(kafka: Any, settings: Any) -> None:
    kafka()
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 0}
    assert ids(check_kafka()) == ["django_messenger.W012"]


def test_w012_passes_once_the_broker_takes_larger_messages(kafka: Any, settings: Any) -> None:
    kafka(max_message_size=2_000_000)
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 1024 * 1024}
    assert check_kafka() == []


@pytest.mark.parametrize("reset", ["latest", "largest", "end", "error", "LATEST"])
def test_e018_consumers_that_would_start_a_new_group_after_the_messages_already_sent(
    kafka: Any, reset: str
) -> None:
    kafka(consumer_config={"auto.offset.reset": reset})
    found = check_kafka()
    assert ids(found) == ["django_messenger.E018"]
    assert "auto.offset.reset" in found[0].msg and reset in found[0].msg


@pytest.mark.parametrize("reset", ["earliest", "smallest", "beginning"])
def test_a_reset_to_the_oldest_message_in_any_spelling_passes(kafka: Any, reset: str) -> None:
    kafka(consumer_config={"auto.offset.reset": reset})
    assert check_kafka() == []


def test_w018_topics_created_with_one_replica(kafka: Any) -> None:
    kafka(replication_factor=1)
    found = check_kafka()
    assert ids(found) == ["django_messenger.W018"]
    assert "replication_factor=1" in found[0].msg and "min.insync.replicas" in found[0].hint


@pytest.mark.parametrize("replicas", [-1, 2, 3])
def test_the_cluster_s_default_or_two_replicas_and_more_pass(kafka: Any, replicas: int) -> None:
    kafka(replication_factor=replicas)
    assert check_kafka() == []


def test_w018_does_not_apply_to_topics_the_operator_creates(kafka: Any) -> None:
    kafka(replication_factor=1, create_topics=False)
    assert check_kafka() == []
