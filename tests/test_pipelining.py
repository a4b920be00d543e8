"""Unit tests of django_messenger.pipelining that need no RabbitMQ.

The I/O thread's bookkeeping (delivery tags, confirms, returns, losses, blocking, the
watchdog) is driven by hand on a pipeline whose thread is not started, with a fake channel;
the deadline and the connection failures run the real publisher against closed ports and
black holes on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import dq_name, xq_name
from pika.frame import Method
from pika.spec import Basic

from django_messenger.exceptions import BrokerUnavailable
from django_messenger.pipelining import (
    PUBLISHED,
    QUEUED,
    READY,
    PipelinedPublisher,
    _Pending,
    _Pipeline,
    _Unconfirmed,
    clear_pipelined_publishers,
    get_pipelined_publisher,
)
from django_messenger.publishing import ConfirmingPublisher, DeadlineExceeded
from tests import amqp
from tests.amqp import (
    MARGIN,
    a_broker_on_a_closed_port,
    a_broker_on_black_holes,
    a_message,
    echo_server_fixture,  # noqa: F401 - the echo_server fixture
    fails_in_time,
    in_a_forked_child,
)

TIMEOUT = 0.5


# --- delivery tags: _Unconfirmed ------------------------------------------------------------------


def filled(count: int) -> _Unconfirmed[str]:
    unconfirmed: _Unconfirmed[str] = _Unconfirmed()
    for number in range(1, count + 1):
        assert unconfirmed.add(f"m{number}") == number  # tags count from 1, as RabbitMQ's do
    return unconfirmed


def test_a_single_ack_settles_its_tag_only() -> None:
    unconfirmed = filled(3)
    assert unconfirmed.confirm(2, multiple=False) == ["m2"]
    assert len(unconfirmed) == 2
    assert unconfirmed.oldest() == "m1"


def test_a_multiple_ack_settles_every_tag_up_to_it() -> None:
    unconfirmed = filled(5)
    assert unconfirmed.confirm(3, multiple=True) == ["m1", "m2", "m3"]
    assert unconfirmed.oldest() == "m4"
    assert unconfirmed.confirm(5, multiple=True) == ["m4", "m5"]
    assert len(unconfirmed) == 0


def test_acks_out_of_order_then_multiple() -> None:
    unconfirmed = filled(6)
    # Single acks in any order…
    assert unconfirmed.confirm(4, multiple=False) == ["m4"]
    assert unconfirmed.confirm(1, multiple=False) == ["m1"]
    # …then a multiple ack settles what is left below it, and nothing twice
    assert unconfirmed.confirm(5, multiple=True) == ["m2", "m3", "m5"]
    assert unconfirmed.confirm(4, multiple=False) == []
    assert unconfirmed.take_all() == ["m6"]


def test_unknown_and_repeated_tags_settle_nothing() -> None:
    unconfirmed = filled(2)
    assert unconfirmed.confirm(9, multiple=False) == []
    assert unconfirmed.confirm(1, multiple=False) == ["m1"]
    assert unconfirmed.confirm(1, multiple=True) == []
    assert len(unconfirmed) == 1


def test_multiple_with_tag_zero_settles_everything() -> None:
    assert filled(3).confirm(0, multiple=True) == ["m1", "m2", "m3"]


def test_tags_keep_counting_after_confirms() -> None:
    unconfirmed = filled(2)
    unconfirmed.confirm(2, multiple=True)
    assert unconfirmed.add("m3") == 3


# --- the I/O thread's side, driven by hand -------------------------------------------------------


class FakeChannel:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, bool]] = []
        self.declared: list[tuple[str, dict[str, Any]]] = []
        self.declare_callbacks: list[Any] = []

    def basic_publish(
        self, *, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool
    ) -> None:
        assert exchange == ""
        self.published.append((routing_key, body, mandatory))

    def queue_declare(
        self, *, queue: str, durable: bool, arguments: dict[str, Any], callback: Any = None
    ) -> None:
        assert durable
        self.declared.append((queue, arguments))
        if callback is not None:
            self.declare_callbacks.append(callback)


class FakeConnection:
    is_open = True
    is_closed = False
    is_closing = False

    def __init__(self) -> None:
        self.terminated: list[BaseException] = []

    def _terminate_stream(self, error: BaseException) -> None:
        self.terminated.append(error)


@pytest.fixture
def pipeline() -> Iterator[_Pipeline]:
    """A pipeline on a ready fake connection; its I/O thread is never started."""
    broker = RabbitmqBroker(host="127.0.0.1", confirm_delivery=True)
    made = _Pipeline(PipelinedPublisher(broker, TIMEOUT))
    made.state = READY
    made.connection = FakeConnection()
    made.channel = FakeChannel()
    yield made
    made.ioloop.close()


def item(queue: str = "q", number: int = 0, timeout: float = 5.0) -> _Pending:
    body = f'{{"message_id": "{queue}-{number}"}}'.encode()
    properties = pika.BasicProperties(delivery_mode=2)
    return _Pending(queue, queue, body, properties, time.monotonic() + timeout)


def hand_over(pipeline: _Pipeline, *items: _Pending) -> None:
    pipeline._waiting.extend(items)
    pipeline._pump()


def ack(tag: int, multiple: bool = False) -> Method:
    return Method(1, Basic.Ack(delivery_tag=tag, multiple=multiple))


def nack(tag: int, multiple: bool = False) -> Method:
    return Method(1, Basic.Nack(delivery_tag=tag, multiple=multiple))


def outcome(pipeline: _Pipeline, pending: _Pending) -> str:
    """'ok', or the BrokerUnavailable detail, as the waiting caller would see it."""
    try:
        pipeline.wait(pending)
    except BrokerUnavailable as exc:
        assert exc.__cause__ is not None
        return exc.reason
    return "ok"


def test_messages_are_published_at_once_without_waiting_for_confirms(pipeline: _Pipeline) -> None:
    items = [item(number=n) for n in range(3)]
    hand_over(pipeline, *items)
    channel = pipeline.channel
    assert [body for _, body, _ in channel.published] == [i.body for i in items]
    assert all(mandatory for _, _, mandatory in channel.published)
    assert all(i.state == PUBLISHED and not i.settled for i in items)


def test_a_multiple_ack_settles_every_caller_up_to_its_tag(pipeline: _Pipeline) -> None:
    items = [item(number=n) for n in range(3)]
    hand_over(pipeline, *items)
    pipeline._on_confirm(ack(2, multiple=True))
    assert [i.settled for i in items] == [True, True, False]
    assert outcome(pipeline, items[0]) == outcome(pipeline, items[1]) == "ok"
    pipeline._on_confirm(ack(3))
    assert outcome(pipeline, items[2]) == "ok"


def test_out_of_order_acks_and_a_nack_each_reach_their_caller(pipeline: _Pipeline) -> None:
    items = [item(number=n) for n in range(4)]
    hand_over(pipeline, *items)
    pipeline._on_confirm(ack(3))
    pipeline._on_confirm(nack(2))
    pipeline._on_confirm(ack(4, multiple=True))
    assert outcome(pipeline, items[0]) == "ok"
    assert "basic.nack" in outcome(pipeline, items[1])
    assert outcome(pipeline, items[2]) == "ok"
    assert outcome(pipeline, items[3]) == "ok"


def test_a_multiple_nack_fails_every_caller_up_to_its_tag(pipeline: _Pipeline) -> None:
    items = [item(number=n) for n in range(3)]
    hand_over(pipeline, *items)
    pipeline._on_confirm(nack(2, multiple=True))
    pipeline._on_confirm(ack(3))
    assert ["basic.nack" in outcome(pipeline, i) for i in items] == [True, True, False]


def test_a_returned_message_fails_as_unroutable_and_its_queue_is_declared_again(pipeline: _Pipeline) -> None:
    items = [item("a", 1), item("b", 2), item("a", 3)]
    hand_over(pipeline, *items)
    # RabbitMQ returns the second message (no tag on a return), then acks all three
    pipeline._on_return(None, Basic.Return(312, "NO_ROUTE", "", "b"), None, items[1].body)
    pipeline._on_confirm(ack(3, multiple=True))
    assert outcome(pipeline, items[0]) == outcome(pipeline, items[2]) == "ok"
    assert "could not route" in outcome(pipeline, items[1])
    assert "b" in pipeline.broker.queues_pending
    assert "a" not in pipeline.broker.queues_pending


def test_a_caller_that_gave_up_is_failed_once_and_its_late_ack_is_ignored(pipeline: _Pipeline) -> None:
    late = item(timeout=0.05)
    hand_over(pipeline, late)
    start = time.monotonic()
    assert "did not confirm" in outcome(pipeline, late)
    assert time.monotonic() - start < 0.05 + MARGIN
    pipeline._on_confirm(ack(1))  # arrives after the caller gave up
    assert "did not confirm" in str(late.detail)


def test_a_message_whose_caller_gave_up_is_never_published(pipeline: _Pipeline) -> None:
    pipeline.state = "connecting"
    expired = item(timeout=0.01)
    pipeline._waiting.append(expired)
    assert "Could not connect to RabbitMQ" in outcome(pipeline, expired)
    fresh = item(number=1)
    pipeline.state = READY
    hand_over(pipeline, fresh)
    assert [body for _, body, _ in pipeline.channel.published] == [fresh.body]


def test_a_pending_queue_is_declared_before_its_messages_are_published(pipeline: _Pipeline) -> None:
    broker = pipeline.broker
    broker.declare_queue("jobs")
    assert "jobs" in broker.queues_pending
    first, delayed, other = item("jobs", 1), item("jobs", 2), item("other", 3)
    delayed.queue_name = dq_name("jobs")
    hand_over(pipeline, first, delayed, other)
    channel = pipeline.channel
    # The queue, its delay queue and its dead-letter queue, with Dramatiq's arguments
    arguments = broker._build_queue_arguments("jobs")
    assert channel.declared == [
        ("jobs", arguments),
        (dq_name("jobs"), arguments),
        (xq_name("jobs"), {"x-message-ttl": DEAD_MESSAGE_TTL}),
    ]
    # Meanwhile only the message of the other queue went out
    assert [key for key, _, _ in channel.published] == ["other"]
    # When the last declare-ok arrives, the held messages go, in order
    channel.declare_callbacks[-1](None)
    assert [key for key, _, _ in channel.published] == ["other", "jobs", dq_name("jobs")]
    assert "jobs" not in broker.queues_pending
    # Tags follow the publishing order
    pipeline._on_confirm(ack(1))
    assert other.settled and not first.settled


def test_losing_the_connection_carries_every_message_over_once(pipeline: _Pipeline) -> None:
    pipeline.broker.declare_queue("slow")
    sent, held = item("q", 1), item("slow", 2)
    hand_over(pipeline, sent, held)
    assert sent.state == PUBLISHED
    assert held.state == QUEUED and "slow" in pipeline._declaring
    connects: list[bool] = []
    pipeline._connect = lambda: connects.append(True)  # type: ignore[method-assign]
    # When the connection is reset
    lost = pika.exceptions.StreamLostError("Stream connection lost: ConnectionResetError(104)")
    pipeline._on_closed(pipeline.connection, lost)
    # Then both wait for the next connection, in their order, once; a new one is started at once
    assert not sent.settled and not held.settled
    assert sent.retried and held.retried and sent.state == QUEUED
    assert list(pipeline._waiting) == [sent, held]
    assert connects == [True]


def test_a_second_loss_fails_the_messages_with_its_reason(pipeline: _Pipeline) -> None:
    pipeline.broker.declare_queue("slow")
    sent, held = item("q", 1), item("slow", 2)
    sent.retried = held.retried = True
    hand_over(pipeline, sent, held)
    pipeline._on_closed(pipeline.connection, pika.exceptions.StreamLostError("lost"))
    assert "connection to RabbitMQ failed" in outcome(pipeline, sent)
    assert "connection to RabbitMQ failed" in outcome(pipeline, held)


def test_a_published_message_whose_deadline_passed_is_not_carried_over(pipeline: _Pipeline) -> None:
    sent = item("q", 1)
    hand_over(pipeline, sent)
    sent.deadline = time.monotonic() - 0.001
    pipeline._on_closed(pipeline.connection, pika.exceptions.StreamLostError("lost"))
    assert "connection to RabbitMQ failed" in outcome(pipeline, sent)


def test_a_connection_dropped_for_its_deadline_fails_everything_on_it(pipeline: _Pipeline) -> None:
    pipeline.broker.declare_queue("slow")
    sent, held = item("q", 1), item("slow", 2)
    hand_over(pipeline, sent, held)
    pipeline._on_closed(pipeline.connection, DeadlineExceeded("no answer"))
    assert "did not confirm" in outcome(pipeline, sent)
    assert "did not confirm" in outcome(pipeline, held)


def test_the_watchdog_drops_a_connection_that_owes_a_confirm_too_long(pipeline: _Pipeline) -> None:
    pending = item()
    hand_over(pipeline, pending)
    connection = pipeline.connection
    # A confirm owed for less than the timeout: nothing happens
    pipeline._on_watchdog()
    assert connection.terminated == []
    # Owed for the whole timeout: the connection is torn down as a black hole
    pending.sent_at -= TIMEOUT
    pipeline._on_watchdog()
    assert [type(error) for error in connection.terminated] == [DeadlineExceeded]


def test_the_watchdog_drops_a_connection_that_owes_a_declaration_too_long(pipeline: _Pipeline) -> None:
    pipeline.broker.declare_queue("slow")
    hand_over(pipeline, item("slow"))
    pipeline._asked["slow"] -= TIMEOUT
    pipeline._on_watchdog()
    assert len(pipeline.connection.terminated) == 1


def test_nothing_is_published_on_a_blocked_connection(pipeline: _Pipeline) -> None:
    # Given a connection that RabbitMQ blocked (a memory or disk alarm), simulated
    pipeline._on_blocked(pipeline.connection, None)
    doomed, survivor = item(number=1, timeout=0.05), item(number=2)
    hand_over(pipeline, doomed, survivor)
    # Then nothing goes out, and a caller that runs out of time says why
    assert pipeline.channel.published == []
    start = time.monotonic()
    assert "blocking publishers" in outcome(pipeline, doomed)
    assert time.monotonic() - start < 0.05 + MARGIN
    # When the alarm clears, what still waits goes out; the abandoned message never does
    pipeline._on_unblocked(pipeline.connection, None)
    assert [body for _, body, _ in pipeline.channel.published] == [survivor.body]


def test_a_blocked_connection_closed_by_pika_fails_its_callers_as_blocked(pipeline: _Pipeline) -> None:
    sent = item()
    hand_over(pipeline, sent)
    pipeline._on_blocked(pipeline.connection, None)
    pipeline._on_closed(pipeline.connection, pika.exceptions.ConnectionBlockedTimeout())
    assert "blocking publishers" in outcome(pipeline, sent)
    assert pipeline.blocked is False


def test_a_channel_closed_by_the_broker_fails_what_was_sent_on_it(pipeline: _Pipeline) -> None:
    sent = item()
    hand_over(pipeline, sent)
    channel = pipeline.channel
    closed: list[bool] = []
    pipeline.connection.close = lambda: closed.append(True)
    pipeline._on_channel_closed(channel, pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED"))
    assert "406" in outcome(pipeline, sent)
    assert closed == [True]  # the connection is replaced


def test_a_submitted_message_reaches_the_io_loop() -> None:
    broker = RabbitmqBroker(host="127.0.0.1", confirm_delivery=True)
    made = _Pipeline(PipelinedPublisher(broker, TIMEOUT))
    try:
        pending = item()
        made.submit(pending)
        made.submit(item(number=2))
        # One wake-up for a burst: the I/O loop drains both at once
        assert made._wake_pending and len(made._incoming) == 2
    finally:
        made.ioloop.close()


# --- the real publisher, without RabbitMQ ---------------------------------------------------------


def test_it_is_a_confirming_publisher_with_the_same_shape() -> None:
    broker = RabbitmqBroker(url="amqp://127.0.0.1:5672;amqp://127.0.0.1:5673", confirm_delivery=True)
    publisher = PipelinedPublisher(broker, 2)
    assert isinstance(publisher, ConfirmingPublisher)
    assert [p.port for p in publisher.parameters] == [5672, 5673]
    assert publisher.timeout == 2.0
    assert publisher.io_thread is None  # started lazily, on the first publish


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_it_needs_a_positive_timeout(timeout: float) -> None:
    with pytest.raises(ValueError):
        PipelinedPublisher(RabbitmqBroker(host="127.0.0.1"), timeout)


def test_get_pipelined_publisher_caches_one_per_broker_and_timeout() -> None:
    amqp.check_caches_one_per_broker_and_timeout(get_pipelined_publisher, clear_pipelined_publishers)


def test_a_closed_port_fails_at_once_and_runs_only_the_before_hook() -> None:
    publisher = PipelinedPublisher(a_broker_on_a_closed_port(), TIMEOUT)
    try:
        amqp.check_a_closed_port_fails_at_once_running_only_the_before_hook(publisher, TIMEOUT)
        # And the I/O thread is still there for the next message, which fails the same way
        thread = publisher.io_thread
        assert thread is not None and thread.is_alive()
        with pytest.raises(BrokerUnavailable):
            publisher.publish(a_message())
        assert publisher.io_thread is thread
    finally:
        publisher.close()
    assert not thread.is_alive()


def test_black_hole_while_connecting_fails_within_the_timeout(echo_server: tuple[str, int]) -> None:
    with a_broker_on_black_holes(echo_server) as (broker, _):
        publisher = PipelinedPublisher(broker, TIMEOUT)
        try:
            with fails_in_time(TIMEOUT) as raised:
                publisher.publish(a_message())
            assert "Could not connect" in raised.value.reason
        finally:
            publisher.close()


def test_all_hosts_share_the_timeout(echo_server: tuple[str, int]) -> None:
    with a_broker_on_black_holes(echo_server, hosts=2) as (broker, (first, second)):
        publisher = PipelinedPublisher(broker, TIMEOUT)
        try:
            with fails_in_time(TIMEOUT):
                publisher.publish(a_message())
            # The I/O thread goes on to the second host after the first one's share
            deadline = time.monotonic() + TIMEOUT + MARGIN
            while second.accepted == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert first.accepted >= 1 and second.accepted >= 1
        finally:
            publisher.close()


def test_many_threads_fail_in_time_together_against_a_closed_port() -> None:
    publisher = PipelinedPublisher(a_broker_on_a_closed_port(), TIMEOUT)
    failures: list[BaseException] = []
    elapsed: list[float] = []

    def work() -> None:
        for _ in range(5):
            start = time.monotonic()
            try:
                publisher.publish(a_message())
            except BrokerUnavailable as exc:
                failures.append(exc)
            elapsed.append(time.monotonic() - start)

    threads = [threading.Thread(target=work) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        publisher.close()
    assert len(failures) == 40
    assert max(elapsed) < TIMEOUT + MARGIN


def test_a_publish_after_close_starts_a_new_io_thread() -> None:
    publisher = PipelinedPublisher(a_broker_on_a_closed_port(), TIMEOUT)
    try:
        with pytest.raises(BrokerUnavailable):
            publisher.publish(a_message())
        first = publisher.io_thread
        publisher.close()
        assert first is not None and not first.is_alive()
        with pytest.raises(BrokerUnavailable):
            publisher.publish(a_message())
        assert publisher.io_thread is not None and publisher.io_thread is not first
    finally:
        publisher.close()


def test_a_forked_child_forgets_the_parents_io_thread() -> None:
    publisher = PipelinedPublisher(a_broker_on_a_closed_port(), TIMEOUT)
    with pytest.raises(BrokerUnavailable):
        publisher.publish(a_message())
    parent_thread = publisher.io_thread

    def child() -> int:
        forgotten = publisher.io_thread is None
        with contextlib.suppress(BrokerUnavailable):
            publisher.publish(a_message())
        own = publisher.io_thread
        return 0 if forgotten and own is not None and own is not parent_thread and own.is_alive() else 2

    exit_code = in_a_forked_child(child)
    try:
        assert exit_code == 0
        assert publisher.io_thread is parent_thread and parent_thread is not None and parent_thread.is_alive()
    finally:
        publisher.close()
