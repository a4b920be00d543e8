"""Quorum queues on Dramatiq's RabbitmqBroker: the arguments each queue is declared with, and why a
declaration is refused. No server: the broker's channel is a recording fake (the real declarations
run on a RabbitMQ cluster in tests/integration/test_cluster.py)."""

from __future__ import annotations

from typing import Any

import pika.exceptions
import pytest
from django.core.exceptions import ImproperlyConfigured
from dramatiq.brokers import rabbitmq as dramatiq_rabbitmq
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.errors import ConnectionClosed

from django_messenger.brokers.rabbitmq import (
    dead_letter_arguments,
    explain_refusal,
    queue_arguments,
    type_arguments,
    use_queue_types,
)
from django_messenger.transports.dramatiq.binding import Binding, binding

URL = "amqp://guest:guest@127.0.0.1:1/%2F"  # never connected: the tests give the broker a fake channel
QUORUM_ONLY = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
CLASSIC_TO_QUORUM = (
    "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'work' in vhost '/': "
    "received the value 'quorum' of type 'longstr' but current is none"
)


class FakeChannel:
    """Records queue declarations; raises ``error`` instead when given one."""

    def __init__(
        self, declared: list[tuple[str, dict[str, Any]]], error: BaseException | None = None
    ) -> None:
        self.declared = declared
        self.error = error
        self.is_open = True

    def queue_declare(self, queue: str, durable: bool, arguments: dict[str, Any]) -> None:
        assert durable
        if self.error is not None:
            self.is_open = False
            raise self.error
        self.declared.append((queue, arguments))

    def confirm_delivery(self) -> None:
        pass

    def close(self) -> None:
        self.is_open = False


class FakeConnection:
    def __init__(self, declared: list[tuple[str, dict[str, Any]]], error: BaseException | None) -> None:
        self.declared, self.error, self.is_open = declared, error, True

    def channel(self) -> FakeChannel:
        return FakeChannel(self.declared, self.error)

    def close(self) -> None:
        self.is_open = False


@pytest.fixture
def declared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What the brokers of the test declare: their connections are FakeConnections."""
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        dramatiq_rabbitmq.pika, "BlockingConnection", lambda parameters: FakeConnection(calls, None)
    )
    return calls


def quorum_for(*queues: str) -> Any:
    return lambda queue: "quorum" if queue in queues else "classic"


def test_type_arguments() -> None:
    assert type_arguments("classic") == {}
    assert type_arguments("quorum") == QUORUM_ONLY
    with pytest.raises(ValueError, match="'classic', 'quorum'"):
        type_arguments("stream")


def test_without_queue_types_a_broker_declares_dramatiq_s_own_arguments() -> None:
    broker = RabbitmqBroker(url=URL, max_priority=5)

    assert queue_arguments(broker, "work") == RabbitmqBroker._build_queue_arguments(broker, "work")
    assert queue_arguments(broker, "work.DQ")["x-dead-letter-routing-key"] == "work.XQ"
    assert dead_letter_arguments(broker, "work") == {"x-message-ttl": DEAD_MESSAGE_TTL}


def test_dramatiq_declares_the_queue_its_delay_and_dead_letter_queues_as_quorum_queues(
    declared: list,
) -> None:
    # Given a broker whose "work" queue is a quorum queue
    broker = RabbitmqBroker(url=URL, confirm_delivery=True)
    use_queue_types(broker, quorum_for("work"))

    # When Dramatiq declares it (as a worker's consumer does), and a classic queue beside it
    broker.declare_queue("work", ensure=True)
    broker.declare_queue("plain", ensure=True)

    # Then the three queues of "work" are quorum queues with Dramatiq's own arguments kept
    dead_letters = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "work.XQ"}
    assert declared[:3] == [
        ("work", {**dead_letters, **QUORUM_ONLY}),
        ("work.DQ", {**dead_letters, **QUORUM_ONLY}),
        ("work.XQ", {"x-message-ttl": DEAD_MESSAGE_TTL, "x-queue-type": "quorum"}),
    ]
    # And the other queue is declared exactly as Dramatiq alone would
    assert declared[3:] == [
        ("plain", RabbitmqBroker._build_queue_arguments(broker, "plain")),
        ("plain.DQ", RabbitmqBroker._build_queue_arguments(broker, "plain")),
        ("plain.XQ", {"x-message-ttl": DEAD_MESSAGE_TTL}),
    ]


def test_the_type_is_asked_at_each_declaration_and_the_methods_are_installed_once() -> None:
    broker = RabbitmqBroker(url=URL)
    use_queue_types(broker, quorum_for())
    ensure_queue = broker._ensure_queue
    assert "x-queue-type" not in broker._build_queue_arguments("work")

    use_queue_types(broker, quorum_for("work"))

    assert broker._build_queue_arguments("work")["x-queue-type"] == "quorum"
    assert broker._ensure_queue == ensure_queue


def test_a_classic_queue_declared_as_quorum_fails_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a "work" queue that RabbitMQ has as a classic queue
    refusal = pika.exceptions.ChannelClosedByBroker(406, CLASSIC_TO_QUORUM)
    monkeypatch.setattr(
        dramatiq_rabbitmq.pika, "BlockingConnection", lambda parameters: FakeConnection([], refusal)
    )
    broker = RabbitmqBroker(url=URL)
    use_queue_types(broker, quorum_for("work"))

    # When a worker declares it as a quorum queue
    with pytest.raises(ConnectionClosed) as raised:
        broker.declare_queue("work", ensure=True)

    # Then the error (what the worker logs) says what happened and what to do, and is logged
    assert "already exists as a classic queue" in str(raised.value)
    assert "'work.DQ'" in str(raised.value)
    assert "Moving to quorum queues" in str(raised.value)
    assert "already exists as a classic queue" in caplog.text


@pytest.mark.parametrize(
    ("reply", "wanted", "expected"),
    [
        (CLASSIC_TO_QUORUM, "quorum", "already exists as a classic queue"),
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-overflow' for queue 'work' in vhost '/': received "
            "the value 'reject-publish' of type 'longstr' but current is none",
            "quorum",
            "already exists as a classic queue",
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'work' in vhost '/': received "
            "none but current is the value 'quorum' of type 'longstr'",
            "classic",
            "already exists as a quorum queue",
        ),
        (
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'work' in vhost '/' of queue "
            "type rabbit_quorum_queue",
            "quorum",
            "quorum queues take no max_priority",
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'work.XQ' in vhost '/': "
            "received the value '604800000' of type 'signedint' but current is none",
            "quorum",
            "exists with other arguments",
        ),
    ],
)
def test_refusals_are_explained(reply: str, wanted: str, expected: str) -> None:
    explained = explain_refusal(pika.exceptions.ChannelClosedByBroker(406, reply), "work.DQ", wanted)

    assert explained is not None
    assert expected in explained
    assert "'work'" in explained


def test_other_errors_are_not_refusals() -> None:
    assert explain_refusal(pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND"), "work", "quorum") is None
    assert explain_refusal(pika.exceptions.StreamLostError("reset"), "work", "quorum") is None


# -- the binding decides each queue's type ----------------------------------------------------


@pytest.fixture
def quorum_async(settings: Any) -> None:
    settings.MESSENGER = {
        "DEFAULT_TRANSPORT": "async",
        "TRANSPORTS": {
            "async": {"queue_name": "work", "queue_type": "quorum"},
            "bulk": {"queue_name": "bulk"},
        },
    }


@pytest.mark.usefixtures("quorum_async")
def test_the_binding_gives_a_transport_s_queues_its_queue_type() -> None:
    # The transport's queue (that of its fan-out actor and of handlers that name none)
    assert binding.queue_type("work") == "quorum"
    # A handler's own queue_name takes its routed transport's type (handle_everything: "other")
    assert binding.queue_type("other") == "quorum"
    # Another transport's queue, and a queue no transport sends to, stay classic
    assert binding.queue_type("bulk") == "classic"
    assert binding.queue_type("someone-else") == "classic"


def test_a_queue_type_that_is_neither_declares_nothing(settings: Any) -> None:
    settings.MESSENGER = {"TRANSPORTS": {"async": {"queue_name": "work", "queue_type": "Quorum"}}}

    with pytest.raises(ImproperlyConfigured, match="E014"):
        binding.queue_type("work")


@pytest.mark.usefixtures("quorum_async")
def test_binding_a_rabbitmq_broker_makes_it_declare_the_queue_types(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given messenger bound to a RabbitmqBroker (binding connects to nothing; the actors are
    # left out: declaring them on a broker of its own would refuse the handlers of the locator)
    broker = RabbitmqBroker(url=URL, confirm_delivery=True, middleware=[])
    bound = Binding()
    monkeypatch.setattr(bound, "declare", lambda handler: None)
    monkeypatch.setattr(bound, "declare_fanout_actors", lambda: None)
    bound.bind(broker)

    # Then Dramatiq's own argument builder gives each queue its transport's type
    assert broker._build_queue_arguments("work")["x-queue-type"] == "quorum"
    assert broker._build_queue_arguments("other")["x-queue-type"] == "quorum"
    assert "x-queue-type" not in broker._build_queue_arguments("bulk")


def test_the_private_methods_of_dramatiq_that_are_replaced_still_exist() -> None:
    # use_queue_types() gives a broker its own versions of these: a Dramatiq that renamed them
    # would declare classic queues without a word.
    for name in ("_build_queue_arguments", "_declare_xq_queue", "_ensure_queue", "_declare_queue"):
        assert callable(getattr(RabbitmqBroker, name))
