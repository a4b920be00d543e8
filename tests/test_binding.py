"""Handlers as Dramatiq actors: decoding, ReceivedStamp, poison messages, fan-out."""

import dataclasses
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest

from django_messenger import Envelope, MessageDecodingFailed, bus, handler
from django_messenger.encoding import encode_envelope
from django_messenger.locator import locator
from django_messenger.stamps import OperationStamp, ReceivedStamp, SentStamp
from django_messenger.transports.dramatiq.binding import DEFAULT_ACTOR_OPTIONS, FANOUT_PREFIX, binding
from tests.conftest import queued
from tests.testapp import handlers as testapp_handlers
from tests.testapp.messages import Address, Ping, PlainGreeting, Shout


@dataclasses.dataclass
class Flaky:
    text: str


@pytest.fixture
def run_worker(broker: Any) -> Callable[[], None]:
    """Run a Dramatiq worker on the StubBroker until every queue is empty (failures stay dead letters)."""

    def run() -> None:
        worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
        worker.start()
        try:
            while any(queue.unfinished_tasks for queue in broker.queues.values()):
                for queue_name in [name for name in broker.queues if not name.endswith(".DQ")]:
                    broker.join(queue_name, fail_fast=False, timeout=30_000)
            worker.join()
        finally:
            worker.stop()
            # A Worker adds a middleware of its own to the broker: drop it with the worker.
            broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]

    return run


def actor_of(message_type: type) -> Any:
    [only] = locator.handlers_for(message_type)
    return binding.actor_of(only)


def payload_of(message: Any, *stamps: Any) -> dict[str, Any]:
    return encode_envelope(Envelope(message, stamps))


# -- a handler's actor ------------------------------------------------------------------


def test_the_actor_decodes_and_calls_the_handler_with_a_received_stamp(
    broker: Any, received: list[Envelope], run_worker: Callable[[], None]
) -> None:
    # Given a message dispatched to its handler's actor
    sent = bus.dispatch(PlainGreeting("Ada"), stamps=[OperationStamp("create")])

    # When a worker processes it
    run_worker()

    # Then the handler got the decoded message, the same id and stamps, and a ReceivedStamp
    [envelope] = received
    assert envelope.message == PlainGreeting("Ada")
    assert type(envelope.message) is PlainGreeting
    assert envelope.message_id == sent.message_id
    assert envelope.last(OperationStamp) == OperationStamp("create")
    stamp = envelope.last(ReceivedStamp)
    assert stamp is not None
    assert stamp.queue_name == "default"
    assert stamp.broker_message_id == sent.last(SentStamp).broker_message_id  # type: ignore[union-attr]
    assert stamp.retries == 0
    assert broker.dead_letters == []


def test_the_actor_goes_to_the_handlers_queue(broker: Any) -> None:
    # The test app's Everything handler declares queue_name="other"
    [everything] = [h for h in locator.handlers if h.fn is testapp_handlers.handle_everything]

    assert binding.actor_of(everything).queue_name == "other"
    assert actor_of(PlainGreeting).queue_name == "default"


def test_the_actor_is_named_and_documented_like_the_handler() -> None:
    actor = actor_of(PlainGreeting)

    assert actor.actor_name == "tests.testapp.handlers.greet"
    assert actor.fn.__name__ == "greet"
    assert actor.fn.__module__ == "tests.testapp.handlers"
    assert actor.messenger_handler.fn is testapp_handlers.greet


def test_called_outside_a_worker_the_actor_adds_no_received_stamp(received: list[Envelope]) -> None:
    # Calling the actor directly runs it in this thread, with no Dramatiq message being processed
    result = actor_of(PlainGreeting)(payload_of(PlainGreeting("direct")))

    assert result is None
    [envelope] = received
    assert envelope.message == PlainGreeting("direct")
    assert envelope.last(ReceivedStamp) is None


def test_the_received_stamp_counts_earlier_tries(
    broker: Any, scratch: Any, run_worker: Callable[[], None]
) -> None:
    # Given a handler that fails on its first try, retried after a 1 ms backoff
    seen: list[Envelope] = []

    @handler(min_backoff=1, max_backoff=1)
    def flaky(message: Flaky, envelope: Envelope) -> None:
        seen.append(envelope)
        if len(seen) == 1:
            raise RuntimeError("first try fails")

    bus.dispatch(Flaky("again"))

    # When a worker runs until the queues are empty
    run_worker()

    # Then the second try saw retries=1, and nothing was dead-lettered
    assert [envelope.last(ReceivedStamp).retries for envelope in seen] == [0, 1]  # type: ignore[union-attr]
    assert broker.dead_letters == []


# -- poison messages ---------------------------------------------------------------------


def test_a_payload_of_another_type_is_dead_lettered_without_retry(
    broker: Any, received: list[Envelope], run_worker: Callable[[], None]
) -> None:
    # Given a Ping envelope sent to the actor of the PlainGreeting handler
    actor_of(PlainGreeting).send(payload_of(Ping("wrong actor")))

    # When a worker processes it
    run_worker()

    # Then the handler never ran and the message went to the dead letters at once
    assert received == []
    [dead] = broker.dead_letters
    assert dead.actor_name == "tests.testapp.handlers.greet"
    assert dead.options.get("retries", 0) == 0
    assert queued(broker) == []
    # and it failed as a decoding failure
    with pytest.raises(MessageDecodingFailed, match="handles"):
        broker.join("default", fail_fast=True)


def test_the_actor_refuses_another_type_when_called_directly(received: list[Envelope]) -> None:
    with pytest.raises(MessageDecodingFailed, match="tests.testapp.handlers.greet handles"):
        actor_of(PlainGreeting)(payload_of(Ping("wrong actor")))

    assert received == []


@pytest.mark.parametrize(
    "payload",
    [
        {"v": 1, "id": "00000000-0000-0000-0000-000000000000", "type": "os.system", "body": {}, "stamps": []},
        {"v": 99},
        ["not", "an", "envelope"],
        "plain text",
    ],
    ids=["unknown type", "wrong version", "a list", "a string"],
)
def test_a_malformed_payload_is_dead_lettered_without_retry(
    broker: Any, received: list[Envelope], run_worker: Callable[[], None], payload: Any
) -> None:
    actor_of(PlainGreeting).send(payload)

    run_worker()

    assert received == []
    [dead] = broker.dead_letters
    assert dead.options.get("retries", 0) == 0


def test_the_worker_goes_on_after_a_poison_message(
    broker: Any, received: list[Envelope], run_worker: Callable[[], None]
) -> None:
    # Given a poison message queued before a good one
    actor_of(PlainGreeting).send({"v": 1, "type": "nope"})
    good = bus.dispatch(PlainGreeting("after the poison"))

    # When a worker runs
    run_worker()

    # Then the good one was handled and only the poison was dead-lettered
    assert [envelope.message_id for envelope in received] == [good.message_id]
    assert len(broker.dead_letters) == 1


def test_an_envelope_over_max_message_size_is_dead_lettered_without_retry(
    broker: Any, received: list[Envelope], run_worker: Callable[[], None], settings: Any
) -> None:
    # Given a 1 KiB limit, and a greeting well over it
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 1024}
    actor_of(PlainGreeting).send(payload_of(PlainGreeting("x" * 2048)))

    # When a worker processes it
    run_worker()

    # Then the handler never ran and the message is a dead letter
    assert received == []
    [dead] = broker.dead_letters
    assert dead.options.get("retries", 0) == 0
    with pytest.raises(MessageDecodingFailed, match="MAX_MESSAGE_SIZE"):
        broker.join("default", fail_fast=True)


def test_an_envelope_under_max_message_size_is_handled(
    broker: Any, received: list[Envelope], run_worker: Callable[[], None], settings: Any
) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 1024}
    actor_of(PlainGreeting).send(payload_of(PlainGreeting("x" * 512)))

    run_worker()

    assert [envelope.message for envelope in received] == [PlainGreeting("x" * 512)]
    assert broker.dead_letters == []


# -- the fan-out actor -------------------------------------------------------------------


def test_each_transport_queue_has_a_fan_out_actor() -> None:
    actor = binding.fanout_actor("default")

    assert actor is not None
    assert actor.actor_name == FANOUT_PREFIX + "default"
    assert actor.queue_name == "default"
    assert actor.options["throws"] == (MessageDecodingFailed,)
    assert {key: actor.options[key] for key in DEFAULT_ACTOR_OPTIONS} == DEFAULT_ACTOR_OPTIONS


def test_a_fan_out_sends_the_payload_on_to_each_handlers_actor(broker: Any) -> None:
    # Given a Shout payload on the fan-out actor
    payload = payload_of(Shout("all"))

    # When the fan-out runs (directly, without a worker)
    binding.fanout_actor("default")(payload)

    # Then one message per handler is queued, each carrying the same payload
    messages = queued(broker)
    assert sorted(message.actor_name for message in messages) == [
        "tests.testapp.handlers.shout_one",
        "tests.testapp.handlers.shout_two",
    ]
    assert all(message.args == (payload,) for message in messages)


def test_a_fan_out_over_max_message_size_sends_nothing_on(broker: Any, settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 1024}

    with pytest.raises(MessageDecodingFailed, match="MAX_MESSAGE_SIZE"):
        binding.fanout_actor("default")(payload_of(Shout("x" * 2048)))

    assert queued(broker) == []


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(
            {
                "v": 1,
                "id": "00000000-0000-0000-0000-000000000000",
                "type": "nope.Unknown",
                "body": {},
                "stamps": [],
            },
            id="unknown type",
        ),
        pytest.param(payload_of(Address("1 Main St", "Springfield")), id="registered type without handlers"),
        pytest.param({"type": "testapp.Shout"}, id="malformed"),
    ],
)
def test_a_fan_out_of_an_unhandled_type_is_dead_lettered(
    broker: Any, run_worker: Callable[[], None], payload: Any
) -> None:
    # Given a payload on the fan-out actor that no handler of this worker takes
    binding.fanout_actor("default").send(payload)  # type: ignore[union-attr]

    # When a worker processes it
    run_worker()

    # Then it is dead-lettered at once, and nothing was sent on
    [dead] = broker.dead_letters
    assert dead.actor_name == FANOUT_PREFIX + "default"
    assert dead.options.get("retries", 0) == 0
    assert queued(broker) == []
    with pytest.raises(MessageDecodingFailed):
        broker.join("default", fail_fast=True)
