"""Forged Dramatiq messages whose fields Dramatiq's worker trips on: dead-lettered as they arrive."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import dramatiq
import pytest
from dramatiq import Message

from django_messenger.brokers.guard import GUARDED, GuardedConsumer, guard_consumers, malformed
from django_messenger.encoding import encode_envelope
from django_messenger.envelope import Envelope
from django_messenger.locator import locator
from django_messenger.transports.dramatiq.binding import binding
from tests.testapp.messages import Ping


def fields(**overrides: Any) -> SimpleNamespace:
    good = {"queue_name": "q", "actor_name": "a", "message_id": "id", "options": {}, "kwargs": {}}
    return SimpleNamespace(**{**good, **overrides})


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"queue_name": "nowhere"}, "it names the queue 'nowhere'"),
        ({"queue_name": ["q"]}, "it names the queue ['q']"),
        ({"actor_name": []}, "its actor name is not a string"),
        ({"message_id": 7}, "its id is not a string"),
        ({"options": 5}, "its options are not an object"),
        ({"kwargs": ["x"]}, "its kwargs are not an object"),
    ],
)
def test_what_makes_a_message_malformed(overrides: dict[str, Any], problem: str) -> None:
    assert malformed(fields(**overrides), "q") == problem


def test_a_well_formed_message_passes() -> None:
    assert malformed(fields(options={"eta": 1}, kwargs={"x": 1}), "q") is None


def test_the_app_guards_its_brokers_consumers_once() -> None:
    # Given the project's broker, guarded by the app when it was ready
    broker = binding.broker
    assert getattr(broker, GUARDED) is True
    consume = broker.consume

    # When it is guarded again, nothing is wrapped twice, and a consumer is a guarded one
    guard_consumers(broker)
    assert broker.consume is consume
    consumer = broker.consume("default", prefetch=1, timeout=10)
    try:
        assert isinstance(consumer, GuardedConsumer) and not isinstance(consumer.consumer, GuardedConsumer)
    finally:
        consumer.close()


@pytest.mark.django_db(transaction=True)  # the handler and the worker's middleware use the database
def test_forged_messages_are_dead_lettered_and_the_worker_goes_on(broker: Any, received: list[Any]) -> None:
    # Given, on a handler's queue, messages a writer to the queue forged: one naming a queue the
    # worker does not consume, options and an actor name of the wrong types; then a good one
    actor = binding.actor_of(locator.handlers_for(Ping)[0])
    queue = actor.queue_name
    payload = encode_envelope(Envelope(Ping(text="after the forged ones")))
    good = Message(queue_name=queue, actor_name=actor.actor_name, args=(payload,), kwargs={}, options={})
    forged = [
        good.asdict() | {"queue_name": "nowhere"},
        good.asdict() | {"options": 5},
        good.asdict() | {"actor_name": []},
    ]
    broker.declare_queue(queue)
    for body in forged:
        broker.queues[queue].put(dramatiq.get_encoder().encode(body))
    broker.enqueue(good)

    # When a worker consumes the queue
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        broker.join(queue, fail_fast=False, timeout=30_000)
    finally:
        worker.stop()
        # A Worker adds a middleware of its own to the broker: drop it with the worker.
        broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]

    # Then the good message was handled, and the forged ones are dead letters (none was run)
    assert [envelope.message.text for envelope in received] == ["after the forged ones"]
    assert len(broker.dead_letters_by_queue[queue]) == len(forged)
