"""django_messenger.testing: capture_dispatched() and drain() on the StubBroker."""

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from django_messenger import bus, handler
from django_messenger.stamps import DelayStamp, SentStamp
from django_messenger.testing import capture_dispatched, drain
from django_messenger.transports.dramatiq.binding import binding
from tests.conftest import queued
from tests.testapp.messages import Ping, PlainGreeting, Shout
from tests.testapp.models import Effect


class Boom(Exception):
    pass


@dataclasses.dataclass
class Explode:
    reason: str


@dataclasses.dataclass
class Relay:
    text: str


# -- capture_dispatched -------------------------------------------------------------------


def test_capture_dispatched_records_each_envelope_and_still_sends_it(broker: Any) -> None:
    # Given a capture around two dispatches
    with capture_dispatched() as captured:
        first = bus.dispatch(Ping("one"))
        second = bus.dispatch(PlainGreeting("Ada"))

    # Then both envelopes were recorded, in order, with the ids the bus returned
    assert [envelope.message for envelope in captured] == [Ping("one"), PlainGreeting("Ada")]
    assert [envelope.message_id for envelope in captured] == [first.message_id, second.message_id]
    # recorded as handed to the transport: before the broker stamped them
    assert all(envelope.last(SentStamp) is None for envelope in captured)
    # and they were sent all the same
    assert len(queued(broker)) == 2


def test_capture_dispatched_records_the_stamps(broker: Any) -> None:
    with capture_dispatched() as captured:
        bus.dispatch(Ping("later"), delay=timedelta(seconds=3))

    [envelope] = captured
    assert envelope.last(DelayStamp) == DelayStamp(timedelta(seconds=3))


def test_capture_dispatched_stops_recording_after_the_block(broker: Any) -> None:
    listeners = list(bus.listeners)

    with capture_dispatched() as captured:
        pass
    bus.dispatch(Ping("after"))

    assert captured == []
    assert bus.listeners == listeners


def test_capture_dispatched_stops_recording_when_the_block_raises(broker: Any) -> None:
    listeners = list(bus.listeners)

    with pytest.raises(RuntimeError), capture_dispatched():
        raise RuntimeError

    assert bus.listeners == listeners


def test_nested_captures_both_record(broker: Any) -> None:
    with capture_dispatched() as outer:
        bus.dispatch(Ping("outer"))
        with capture_dispatched() as inner:
            bus.dispatch(Ping("inner"))

    assert [envelope.message.text for envelope in outer] == ["outer", "inner"]
    assert [envelope.message.text for envelope in inner] == ["inner"]


@pytest.mark.django_db
@pytest.mark.usefixtures("sync_transport")
def test_capture_dispatched_records_synchronous_dispatches(broker: Any) -> None:
    with capture_dispatched() as captured:
        envelope = bus.dispatch(Ping("sync"))

    assert [recorded.message_id for recorded in captured] == [envelope.message_id]
    assert queued(broker) == []


# -- drain -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_drain_runs_the_queued_handlers(broker: Any, received: list[Any]) -> None:
    # Given a message waiting on the StubBroker
    envelope = bus.dispatch(Ping("queued"))
    assert not Effect.objects.exists()

    # When the queues are drained
    drain()

    # Then its handler ran, in a worker, with the dispatched id
    effect = Effect.objects.get()
    assert (effect.handler, effect.message_id, effect.payload) == (
        "ping",
        envelope.message_id,
        {"text": "queued"},
    )
    assert [seen.message_id for seen in received] == [envelope.message_id]
    assert queued(broker) == []


@pytest.mark.django_db(transaction=True)
def test_drain_runs_every_handler_of_a_fan_out(broker: Any) -> None:
    # Given a Shout (two handlers), dispatched with one publish
    envelope = bus.dispatch(Shout("all"))
    assert len(queued(broker)) == 1

    # When the queues are drained
    drain()

    # Then each handler ran once, with the same message id
    effects = Effect.objects.order_by("handler")
    assert [effect.handler for effect in effects] == ["shout_one", "shout_two"]
    assert {effect.message_id for effect in effects} == {envelope.message_id}


@pytest.mark.django_db(transaction=True)
def test_drain_waits_for_delayed_messages(broker: Any) -> None:
    # Given a message delayed by 100 ms, still on the delay queue
    envelope = bus.dispatch(Ping("delayed"), delay=timedelta(milliseconds=100))
    [waiting] = queued(broker)
    assert waiting.queue_name.endswith(".DQ")

    # When the queues are drained
    drain()

    # Then it was handled
    assert Effect.objects.get().message_id == envelope.message_id


@pytest.mark.django_db(transaction=True)
def test_drain_runs_messages_that_handlers_dispatch(broker: Any, scratch: Any) -> None:
    # Given a handler that dispatches a Ping
    @handler
    def relay(message: Relay) -> None:
        bus.dispatch(Ping(message.text))

    bus.dispatch(Relay("passed on"))

    # When the queues are drained
    drain()

    # Then the Ping it dispatched was handled too
    assert Effect.objects.get().payload == {"text": "passed on"}


@pytest.mark.django_db(transaction=True)
def test_drain_raises_the_failure_with_fail_fast(broker: Any, scratch: Any) -> None:
    # Given a handler that fails, with no retries
    @handler(max_retries=0)
    def explode(message: Explode) -> None:
        raise Boom(message.reason)

    bus.dispatch(Explode("kaboom"))

    # When the queues are drained, the handler's exception is raised
    with pytest.raises(Boom, match="kaboom"):
        drain()
    assert len(broker.dead_letters) == 1


@pytest.mark.django_db(transaction=True)
def test_drain_without_fail_fast_leaves_the_failure_in_the_dead_letters(broker: Any, scratch: Any) -> None:
    @handler(max_retries=0)
    def explode(message: Explode) -> None:
        raise Boom(message.reason)

    bus.dispatch(Explode("quiet"))
    bus.dispatch(Ping("still handled"))

    drain(fail_fast=False)

    [dead] = broker.dead_letters
    assert dead.actor_name == scratch(explode).actor_name
    assert Effect.objects.get().payload == {"text": "still handled"}


@pytest.mark.django_db(transaction=True)
def test_drain_raises_only_failures_of_this_drain(broker: Any, scratch: Any) -> None:
    # Given a failure left in the dead letters by an earlier drain
    @handler(max_retries=0)
    def explode(message: Explode) -> None:
        raise Boom(message.reason)

    bus.dispatch(Explode("earlier"))
    drain(fail_fast=False)
    assert len(broker.dead_letters) == 1

    # When a later drain processes a good message
    bus.dispatch(Ping("fine"))
    drain()

    # Then it did not raise the old failure, and the message was handled
    assert Effect.objects.get().payload == {"text": "fine"}


def test_drain_leaves_the_brokers_middleware_as_it_found_it(broker: Any) -> None:
    middleware = list(broker.middleware)

    drain()
    drain()

    assert broker.middleware == middleware


def test_drain_with_nothing_queued_returns(broker: Any) -> None:
    drain()

    assert queued(broker) == []


def test_drain_needs_a_stub_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    rabbitmq = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:5672", confirm_delivery=True)
    monkeypatch.setattr(binding, "_broker", rabbitmq)

    with pytest.raises(TypeError, match="needs a StubBroker.*not RabbitmqBroker"):
        drain()
