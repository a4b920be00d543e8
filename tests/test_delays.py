"""Long delays in hops (django_messenger.delays) on the StubBroker: the arithmetic, the
transport's first hop, the worker's next hops, and a hop the broker refuses."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from dramatiq import Message, Middleware
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import MiddlewareError, SkipMessage

from django_messenger import bus, handler
from django_messenger.delays import ETA, DelayHopFailed, DelayHopMiddleware, first_hop, next_hop
from django_messenger.locator import locator
from django_messenger.models import FailedMessage
from django_messenger.testing import drain
from django_messenger.transports.dramatiq.binding import binding
from tests.conftest import queued
from tests.testapp.messages import Ping, Shout
from tests.testapp.models import Effect

HOUR = 3_600_000


@pytest.fixture
def hop(settings: Any) -> Any:
    """Set ``MESSENGER["DELAY_HOP"]`` (seconds) for the test."""

    def use(seconds: float) -> None:
        settings.MESSENGER = {**settings.MESSENGER, "DELAY_HOP": seconds}

    return use


def ping_message(options: dict[str, Any]) -> Message[Any]:
    actor = binding.actor_of(locator.handlers_for(Ping)[0])
    return Message(
        queue_name=actor.queue_name,
        actor_name=actor.actor_name,
        args=({"v": 1},),
        kwargs={},
        options=options,
    )


# -- the arithmetic ------------------------------------------------------------------------------


def test_a_delay_of_at_most_one_hop_is_sent_as_it_is() -> None:
    assert first_hop(600_000, hop=600_000, now=1_000) == (600_000, {})
    assert first_hop(0, hop=600_000, now=1_000) == (0, {})


def test_a_longer_delay_waits_one_hop_and_carries_its_due_time() -> None:
    assert first_hop(24 * HOUR, hop=600_000, now=1_000) == (600_000, {ETA: 1_000 + 24 * HOUR})


@pytest.mark.parametrize(
    ("eta", "now", "expected"),
    [
        (10_000, 0, 2_000),  # far off: one more hop
        (10_000, 8_500, 1_500),  # the last hop is only the rest
        (10_000, 10_000, None),  # due
        (10_000, 12_000, None),  # overdue
    ],
)
def test_the_next_hop(eta: int, now: int, expected: int | None) -> None:
    assert next_hop(eta, hop=2_000, now=now) == expected


# -- the transport: the first hop ----------------------------------------------------------------


def test_a_long_delay_is_published_for_one_hop_with_its_due_time(broker: Any) -> None:
    # Given the default hop (600 s)
    before = current_millis()

    # When a message is dispatched for tomorrow
    bus.dispatch(Ping("tomorrow"), delay=timedelta(hours=24))

    # Then it waits on the delay queue for one hop only, and knows when it is due
    [message] = queued(broker)
    after = current_millis()
    assert message.queue_name == dq_name("default")
    assert before + 600_000 <= message.options["eta"] <= after + 600_000
    assert before + 24 * HOUR <= message.options[ETA] <= after + 24 * HOUR


def test_a_short_delay_is_published_as_before(broker: Any) -> None:
    before = current_millis()

    bus.dispatch(Ping("soon"), delay=timedelta(minutes=5))

    [message] = queued(broker)
    assert before + 300_000 <= message.options["eta"] <= current_millis() + 300_000
    assert ETA not in message.options


# -- the worker: the next hops -------------------------------------------------------------------


def test_a_message_not_due_is_sent_on_with_the_next_hop_and_skipped(broker: Any, hop: Any) -> None:
    # Given a 1 s hop and a message due in an hour
    hop(1)
    message = MessageProxy(ping_message({ETA: current_millis() + HOUR, "retries": 0}))
    before = current_millis()

    # When the worker is about to process it
    with pytest.raises(SkipMessage) as skipped:
        DelayHopMiddleware().before_process_message(broker, message)

    # Then it is skipped (Dramatiq acks it), not failed, and the same message waits one more hop
    assert not isinstance(skipped.value, DelayHopFailed)
    assert not message.failed
    [sent] = queued(broker)
    assert sent.queue_name == dq_name("default")
    assert (sent.message_id, sent.actor_name, sent.args) == (
        message.message_id,
        message.actor_name,
        ({"v": 1},),
    )
    assert before + 1_000 <= sent.options["eta"] <= current_millis() + 1_000
    assert sent.options[ETA] == message.options[ETA]
    assert sent.options["retries"] == 0


def test_the_last_hop_is_only_what_remains(broker: Any, hop: Any) -> None:
    hop(600)
    message = MessageProxy(ping_message({ETA: current_millis() + 5_000}))

    with pytest.raises(SkipMessage):
        DelayHopMiddleware().before_process_message(broker, message)

    [sent] = queued(broker)
    assert sent.options["eta"] <= current_millis() + 5_000


@pytest.mark.parametrize("options", [{ETA: 0}, {}, {ETA: "soon"}], ids=["due", "no due time", "broken"])
def test_a_due_message_or_one_without_a_due_time_goes_on_to_its_handler(broker: Any, options: Any) -> None:
    message = MessageProxy(ping_message(options))

    DelayHopMiddleware().before_process_message(broker, message)

    assert queued(broker) == []
    assert not message.failed


def test_a_hop_the_broker_refuses_fails_the_message_instead_of_acking_it(broker: Any) -> None:
    # Given a message not due whose queue the broker does not know (StubBroker.enqueue raises)
    message = MessageProxy(
        ping_message({ETA: current_millis() + HOUR}).copy(queue_name="nowhere-" + str(time.monotonic_ns()))
    )

    # When the worker is about to process it
    with pytest.raises(DelayHopFailed):
        DelayHopMiddleware().before_process_message(broker, message)

    # Then it is marked failed: Dramatiq rejects (dead-letters) it instead of acknowledging it
    assert message.failed


def test_the_app_adds_the_middleware_to_the_broker_last(broker: Any) -> None:
    assert isinstance(broker.middleware[-1], DelayHopMiddleware)


# -- a real Dramatiq worker on the StubBroker ----------------------------------------------------


@dataclasses.dataclass
class Reminder:
    text: str


@pytest.fixture
def reminders(scratch: Any) -> Iterator[list[float]]:
    """The times (time.time()) at which a Reminder handler ran."""
    ran: list[float] = []

    @handler
    def remind(message: Reminder) -> None:
        ran.append(time.time())

    yield ran


class RefuseHops(Middleware):
    """Fault injection: the broker refuses every delayed publish of a hopping message."""

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if delay is not None and ETA in message.options:
            raise MiddlewareError("refused")


@pytest.mark.django_db(transaction=True)
def test_a_worker_handles_a_long_delay_once_when_it_is_due(
    broker: Any, hop: Any, reminders: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a 0.3 s hop
    hop(0.3)
    caplog.set_level(logging.DEBUG, logger="django_messenger")

    # When a reminder is dispatched for 1.2 s from now and a worker drains the queues
    due = time.time() + 1.2
    bus.dispatch(Reminder("stand up"), delay=timedelta(seconds=1.2))
    drain()

    # Then its handler ran once, not before it was due, after several hops
    assert len(reminders) == 1
    assert reminders[0] >= due - 0.01
    hops = [record for record in caplog.records if "not due yet" in record.getMessage()]
    assert len(hops) >= 3
    # and a routine hop is no warning (Dramatiq's "was skipped" is left out for hops)
    assert not [record for record in caplog.records if "was skipped" in record.getMessage()]


@pytest.mark.django_db(transaction=True)
def test_a_hop_the_broker_refuses_is_dead_lettered_and_stored_not_lost(
    broker: Any, hop: Any, reminders: list[float]
) -> None:
    # Given a reminder waiting its first hop, and a broker that then refuses its next hop
    hop(0.2)
    envelope = bus.dispatch(Reminder("stand up"), delay=timedelta(hours=1))
    broker.middleware.insert(0, RefuseHops())
    try:
        # When a worker drains the queues
        drain(fail_fast=False)
    finally:
        broker.middleware[:] = [m for m in broker.middleware if not isinstance(m, RefuseHops)]

    # Then the handler did not run, and the message was rejected (dead-lettered), not acked
    assert reminders == []
    [dead] = broker.dead_letters
    assert dead.options[ETA] > current_millis()
    # and its failure is stored, so messenger_failed can send it again
    failed = FailedMessage.objects.get(message_id=envelope.message_id)
    assert "DelayHopFailed" in failed.error


@pytest.mark.django_db(transaction=True)
def test_a_long_delayed_fan_out_reaches_every_handler_once(broker: Any, hop: Any) -> None:
    # Given a 0.2 s hop and Shout's two handlers (one publish, to the fan-out actor)
    hop(0.2)

    # When a shout is dispatched for 0.7 s from now and a worker drains the queues
    envelope = bus.dispatch(Shout("later"), delay=timedelta(seconds=0.7))
    drain()

    # Then each handler ran once
    handlers = Effect.objects.filter(message_id=envelope.message_id).values_list("handler", flat=True)
    assert sorted(handlers) == ["shout_one", "shout_two"]
