"""PipelinedPublisher against a real RabbitMQ, through a FaultProxy that injects network faults.

Every call either gets the broker's confirm or fails with BrokerUnavailable within the
publish timeout (plus a margin for the test's own overhead); concurrent calls share one
connection; after a fault the same publisher recovers by itself. RabbitMQ must listen on
127.0.0.1:5672 (guest/guest): the tests skip when it does not, except in CI (``CI`` set).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_messenger.exceptions import BrokerUnavailable
from django_messenger.pipelining import PipelinedPublisher
from tests import amqp
from tests.amqp import (
    MARGIN,
    TIMEOUT,
    Recorder,
    a_message,
    count,
    declare_rejecting,
    delete_queues,
    in_a_forked_child,
    publisher_maker,
    take_all,
)
from tests.faultproxy import FaultProxy

# The rabbitmq, queue and proxy fixtures are in tests/integration/conftest.py.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("rabbitmq")]


def assert_io_thread_stopped(publisher: PipelinedPublisher) -> None:
    thread = publisher.io_thread
    assert thread is None or not thread.is_alive()


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., PipelinedPublisher]]:
    """Build pipelined publishers on fresh brokers; their I/O threads are stopped after the test."""
    with publisher_maker(PipelinedPublisher, after_close=assert_io_thread_stopped) as make:
        yield make


def publish_concurrently(
    publisher: PipelinedPublisher, make_message: Callable[[int, int], Any], threads: int, per_thread: int
) -> tuple[list[Any], list[BaseException], list[float]]:
    """Publish from ``threads`` threads at once; the sent messages, the errors, each call's time."""
    sent: list[Any] = []
    errors: list[BaseException] = []
    elapsed: list[float] = []
    start = threading.Barrier(threads)

    def work(number: int) -> None:
        start.wait()
        for index in range(per_thread):
            began = time.monotonic()
            try:
                sent.append(publisher.publish(make_message(number, index)))
            except BaseException as exc:  # reported by the caller
                errors.append(exc)
            finally:
                elapsed.append(time.monotonic() - began)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not any(worker.is_alive() for worker in workers), "a publishing thread hangs"
    return sent, errors, elapsed


# --- the happy path -------------------------------------------------------------------------------


def test_a_published_message_is_in_the_queue(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    amqp.check_a_published_message_is_in_the_queue(make_publisher(proxy.url()), queue)


def test_the_hooks_run_in_the_calling_thread_after_the_confirm(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher()
    threads: list[tuple[str, threading.Thread]] = []

    class ThreadRecorder(Recorder):
        def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            threads.append(("before", threading.current_thread()))

        def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            # The broker has it by now
            assert count(queue) == 1
            threads.append(("after", threading.current_thread()))

    publisher.broker.add_middleware(ThreadRecorder())
    publisher.publish(a_message(queue))
    assert threads == [("before", threading.current_thread()), ("after", threading.current_thread())]


def test_one_connection_carries_every_call(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    amqp.check_one_connection_carries_every_call(make_publisher(proxy.url()), proxy, queue)


def test_32_threads_publish_concurrently_all_confirmed_on_one_connection(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(proxy.url(), timeout=10.0)
    threads, per_thread = 32, 25
    sent, errors, _ = publish_concurrently(publisher, lambda _n, _i: a_message(queue), threads, per_thread)
    assert errors == []
    assert len(sent) == threads * per_thread
    # Every message is really in the queue, once
    assert count(queue) == threads * per_thread
    assert set(take_all(queue)) == {message.message_id for message in sent}
    # And one connection carried them all
    assert proxy.accepted == 1


def test_without_confirms_the_message_is_still_sent(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    amqp.check_the_message_is_sent_without_confirms(make_publisher(confirm_delivery=False), queue)


def test_a_delayed_message_goes_to_the_delay_queue_with_an_eta(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    amqp.check_a_delayed_message_goes_to_the_delay_queue_with_an_eta(make_publisher(), queue)


# --- a broker that cannot be reached --------------------------------------------------------------


def test_a_reset_connection_attempt_fails_in_time(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    amqp.check_a_fault_before_connecting_fails_in_time("reset", make_publisher(proxy.url()), proxy, queue)


def test_black_hole_before_connecting_fails_in_time(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    raised = amqp.check_a_fault_before_connecting_fails_in_time("blackhole", publisher, proxy, queue)
    assert "Could not connect" in raised.value.reason


@pytest.mark.parametrize("declared", [True, False], ids=["waiting-for-confirm", "declaring-the-queue"])
def test_black_hole_on_an_open_connection_fails_in_time(
    declared: bool, proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    amqp.check_black_hole_on_an_open_connection_fails_in_time(declared, publisher, proxy, queue)


def test_a_reset_under_load_fails_every_call_in_flight_in_time_and_nothing_hangs(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    # Given 16 threads publishing as fast as they can
    publisher = make_publisher(proxy.url())
    publisher.publish(a_message(queue))
    faulted = threading.Event()

    def make_message(number: int, index: int) -> Any:
        if number == 0 and index == 20:
            proxy.reset()  # When the network resets every connection, mid-stream
            faulted.set()
        return a_message(queue)

    sent, errors, elapsed = publish_concurrently(publisher, make_message, threads=16, per_thread=40)
    # Then every call ended within the timeout, confirmed or failed with BrokerUnavailable
    assert faulted.is_set()
    assert max(elapsed) < TIMEOUT + MARGIN
    assert errors and all(isinstance(error, BrokerUnavailable) for error in errors)
    assert all(error.__cause__ is not None for error in errors)
    # And every confirmed message is in the queue (at most once each)
    ids = take_all(queue)
    assert {m.message_id for m in sent} <= set(ids)
    assert len(ids) == len(set(ids))
    # When the network comes back, Then the same publisher works again
    proxy.restore()
    publisher.publish(a_message(queue))
    assert count(queue) == 1


# --- recovery -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
def test_the_same_publisher_recovers_when_the_network_does(
    fault: str, proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    amqp.check_a_fault_fails_in_time_and_the_same_publisher_recovers(fault, publisher, proxy, queue)


def test_recovers_from_a_connection_reset_while_idle(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    amqp.check_recovers_from_a_connection_reset_while_idle(make_publisher(proxy.url()), proxy, queue)
    # On a new connection
    assert proxy.accepted == 2


# --- the broker says no ---------------------------------------------------------------------------


def test_a_nacked_message_fails_at_once_and_the_connection_stays(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    amqp.check_a_nacked_message_fails_at_once(publisher, queue)
    good = f"{queue}_good"
    try:
        publisher.publish(a_message(good))
        assert count(good) == 1
        assert proxy.accepted == 1
    finally:
        delete_queues(good)


def test_acks_and_nacks_interleaved_from_many_threads_reach_the_right_callers(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    # Given a rejecting queue and a normal one, published to alternately by 16 threads
    publisher = make_publisher(timeout=10.0)
    rejecting = f"{queue}_full"
    declare_rejecting(publisher, rejecting)
    try:
        sent, errors, _ = publish_concurrently(
            publisher,
            lambda number, index: a_message(rejecting if (number + index) % 2 else queue),
            threads=16,
            per_thread=20,
        )
        # Then every message to the normal queue was confirmed, every other one nacked
        assert len(sent) == len(errors) == 160
        assert all(message.queue_name == queue for message in sent)
        assert all("basic.nack" in error.reason for error in errors)  # type: ignore[attr-defined]
        assert count(queue) == 160
    finally:
        delete_queues(rejecting)


def test_an_unroutable_message_fails_and_the_queue_is_declared_again(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    amqp.check_an_unroutable_message_fails_and_the_queue_is_declared_again(make_publisher(), queue)


def test_a_channel_error_fails_and_the_next_send_reconnects(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    amqp.check_a_channel_error_fails_and_the_next_send_reconnects(make_publisher, queue)


# --- processes ------------------------------------------------------------------------------------


def test_a_forked_child_gets_an_io_thread_and_a_connection_of_its_own(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    # Given a publisher whose I/O thread and connection run in this process
    publisher = make_publisher(proxy.url())
    publisher.publish(a_message(queue))
    parent_thread = publisher.io_thread

    # When a forked child (a gunicorn worker, say) publishes through the same object
    def child() -> int:
        publisher.publish(a_message(queue))
        own = publisher.io_thread
        status = 0 if own is not None and own is not parent_thread and own.is_alive() else 2
        publisher.close()
        return status

    # Then it succeeded with its own I/O thread on a new connection, and the parent's still works
    assert in_a_forked_child(child) == 0
    publisher.publish(a_message(queue))
    assert publisher.io_thread is parent_thread
    assert proxy.accepted == 2
    assert count(queue) == 3
