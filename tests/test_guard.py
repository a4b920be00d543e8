"""Forged Dramatiq messages whose fields Dramatiq's worker trips on: dead-lettered as they arrive."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError

from django_messenger.brokers.guard import GUARDED, GuardedConsumer, guard_consumers, malformed
from django_messenger.dramatiq_encoder import (
    BoundedJSONEncoder,
    FieldCheckingEncoder,
    body_bounds_envelope,
    check_fields_when_decoding,
)
from django_messenger.encoding import encode_envelope
from django_messenger.envelope import Envelope
from django_messenger.locator import locator
from django_messenger.transports.dramatiq.binding import binding
from tests.testapp.messages import Ping


def fields(**overrides: Any) -> SimpleNamespace:
    good = {
        "queue_name": "q",
        "actor_name": "a",
        "args": (),
        "kwargs": {},
        "options": {},
        "message_id": "id",
        "message_timestamp": 0,
    }
    return SimpleNamespace(**{**good, **overrides})


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"queue_name": "nowhere"}, "it names the queue 'nowhere'"),
        ({"queue_name": ["q"]}, "it names the queue ['q']"),
        ({"actor_name": []}, "its 'actor_name' is not of the type a Dramatiq message has"),
        ({"message_id": 7}, "its 'message_id' is not of the type a Dramatiq message has"),
        ({"options": 5}, "its 'options' is not of the type a Dramatiq message has"),
        ({"kwargs": ["x"]}, "its 'kwargs' is not of the type a Dramatiq message has"),
        ({"message_timestamp": True}, "its 'message_timestamp' is not of the type a Dramatiq message has"),
    ],
)
def test_what_makes_a_message_malformed(overrides: dict[str, Any], problem: str) -> None:
    assert malformed(fields(**overrides), "q") == problem


def test_a_well_formed_message_passes() -> None:
    assert malformed(fields(options={"eta": 1}, kwargs={"x": 1}), "q") is None


def test_with_the_bounded_encoder_only_the_queue_is_left_to_check() -> None:
    # BoundedJSONEncoder refused the fields of wrong types while decoding
    assert malformed(fields(options=5), "q", fields_checked=True) is None
    assert malformed(fields(queue_name="nowhere"), "q", fields_checked=True) == "it names the queue 'nowhere'"


@pytest.mark.parametrize("field", ["queue_name", "actor_name", "args", "kwargs", "options", "message_id"])
def test_the_bounded_encoder_refuses_a_message_field_of_another_type(field: str) -> None:
    # Given a message body whose field is a number, where Dramatiq's worker takes another type
    body = json.dumps(
        {"queue_name": "q", "actor_name": "a", "args": [], "kwargs": {}, "options": {}, "message_id": "i"}
        | {field: 5}
    ).encode()

    # Then decoding refuses it (every broker's consumer dead-letters what does not decode)
    with pytest.raises(DecodeError, match=field):
        BoundedJSONEncoder().decode(body)


def test_the_bounded_encoder_leaves_what_is_not_a_message_alone() -> None:
    # A result backend decodes results with the project's encoder too
    encoder = BoundedJSONEncoder()
    assert encoder.decode(b"42") == 42
    assert encoder.decode(b'{"options": 5}') == {"options": 5}


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
    # Given, on a handler's queue, a message a writer to the queue forged naming a queue the worker
    # does not consume (the fields of wrong types are refused while decoding: see the encoder's
    # tests above; the contract suite puts both kinds on every real broker), then a good one
    actor = binding.actor_of(locator.handlers_for(Ping)[0])
    queue = actor.queue_name
    payload = encode_envelope(Envelope(Ping(text="after the forged ones")))
    good = Message(queue_name=queue, actor_name=actor.actor_name, args=(payload,), kwargs={}, options={})
    forged = [good.asdict() | {"queue_name": "nowhere"}, good.asdict() | {"queue_name": f"{queue}.DQ"}]
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


def test_an_eta_that_is_not_a_finite_number_is_refused_while_decoding() -> None:
    # JSON's Infinity would hold the message in a worker's delay queue forever
    encoder = BoundedJSONEncoder()
    good = {"queue_name": "q.DQ", "actor_name": "a", "args": [], "kwargs": {}, "options": {}}
    for eta in ("Infinity", "NaN", '"soon"'):
        with pytest.raises(DecodeError, match="options.eta"):
            encoder.decode(json.dumps(good).replace('"options": {}', f'"options": {{"eta": {eta}}}').encode())
    assert encoder.decode(json.dumps(good | {"options": {"eta": 1796019786000}}).encode())["options"]["eta"]
    assert encoder.decode(json.dumps(good | {"options": {"eta": None}}).encode())


def test_a_result_with_other_keys_is_not_taken_for_a_message() -> None:
    # A result backend decodes a handler's result with the project's encoder
    result = {"queue_name": "q", "actor_name": "a", "message_timestamp": "today", "score": 3}
    assert BoundedJSONEncoder().decode(json.dumps(result).encode()) == result


def test_the_app_makes_any_encoder_check_the_fields_while_decoding() -> None:
    # Given a project on Dramatiq's own encoder (no BoundedJSONEncoder: warning W005)
    before = dramatiq.get_encoder()
    dramatiq.set_encoder(JSONEncoder())
    try:
        # When the app is ready (its step, run again here)
        check_fields_when_decoding()
        check_fields_when_decoding()  # once: no wrapper around a wrapper
        encoder = dramatiq.get_encoder()

        # Then the encoder writes what Dramatiq's writes, and refuses a forged field while decoding
        assert isinstance(encoder, FieldCheckingEncoder) and type(encoder.encoder) is JSONEncoder
        assert body_bounds_envelope(encoder)
        message = Message(queue_name="q", actor_name="a", args=(1,), kwargs={}, options={})
        assert encoder.encode(message.asdict()) == JSONEncoder().encode(message.asdict())
        assert Message.decode(message.encode()) == message
        with pytest.raises(DecodeError):
            Message.decode(json.dumps(message.asdict() | {"options": 5}).encode())
    finally:
        dramatiq.set_encoder(before)
