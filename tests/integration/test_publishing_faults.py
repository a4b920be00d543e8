"""ConfirmingPublisher against a real RabbitMQ, through a FaultProxy that injects network faults.

Every send either gets the broker's confirm or fails with BrokerUnavailable within the
publish timeout (plus a margin for the test's own overhead); after a fault the same
publisher recovers by itself. RabbitMQ must listen on 127.0.0.1:5672 (guest/guest): the
tests skip when it does not, except in CI (``CI`` set) where they fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from django_messenger.publishing.rabbitmq import ConfirmingPublisher
from tests import amqp
from tests.amqp import (
    a_message,
    closed_port,
    count,
    fails_in_time,
    in_a_forked_child,
    publisher_maker,
    take_all,
)
from tests.faultproxy import FaultProxy

from .alarms import memory_alarm

# The rabbitmq, queue and proxy fixtures are in tests/integration/conftest.py.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("rabbitmq")]


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., ConfirmingPublisher]]:
    """Build publishers on fresh brokers; their connections are closed after the test."""
    with publisher_maker(ConfirmingPublisher) as make:
        yield make


# --- (1) the happy path ---------------------------------------------------------------------------


def test_a_published_message_is_in_the_queue(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    amqp.check_a_published_message_is_in_the_queue(make_publisher(proxy.url()), queue)


def test_without_confirms_the_message_is_still_sent(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # A broker without publisher confirms: at-most-once, knowingly
    amqp.check_the_message_is_sent_without_confirms(make_publisher(confirm_delivery=False), queue)


def test_the_connection_is_reused(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    amqp.check_one_connection_carries_every_call(make_publisher(proxy.url()), proxy, queue)


# --- (2) a broker that refuses --------------------------------------------------------------------


def test_reset_before_connecting_fails_in_time(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    amqp.check_a_fault_before_connecting_fails_in_time("reset", make_publisher(proxy.url()), proxy, queue)


def test_reset_of_an_open_connection_fails_in_time(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a publisher whose connection works
    publisher = make_publisher(proxy.url())
    publisher.publish(a_message(queue))
    # When the network resets every connection, Then the next send fails in time (its one
    # reconnection attempt included)
    proxy.reset()
    with fails_in_time():
        publisher.publish(a_message(queue))


def test_a_closed_port_fails_in_time(queue: str, make_publisher: Callable[..., ConfirmingPublisher]) -> None:
    publisher = make_publisher(f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F")
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "Could not connect" in raised.value.reason


# --- (3) a black hole -----------------------------------------------------------------------------


def test_black_hole_before_connecting_fails_in_time(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    amqp.check_a_fault_before_connecting_fails_in_time("blackhole", make_publisher(proxy.url()), proxy, queue)


@pytest.mark.parametrize("declared", [True, False], ids=["waiting-for-confirm", "declaring-the-queue"])
def test_black_hole_on_an_open_connection_fails_in_time(
    declared: bool, proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    amqp.check_black_hole_on_an_open_connection_fails_in_time(declared, publisher, proxy, queue)


# --- (4) recovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
def test_the_same_publisher_recovers_when_the_network_does(
    fault: str, proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    ids = amqp.check_a_fault_fails_in_time_and_the_same_publisher_recovers(fault, publisher, proxy, queue)
    # And the queue holds no more than the first message and the last (the failed send is not in it)
    assert len(ids) <= 2


def test_recovers_from_a_broker_that_closed_an_idle_connection(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Its one reconnection makes it work at once
    amqp.check_recovers_from_a_connection_reset_while_idle(make_publisher(proxy.url()), proxy, queue)


# --- (5) a resource alarm: connection.blocked -----------------------------------------------------


def test_a_blocked_connection_fails_in_time_and_recovers(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a publisher whose connection and queue are ready
    publisher = make_publisher()
    publisher.publish(a_message(queue))
    # When RabbitMQ raises a memory alarm, which blocks every publishing connection
    with memory_alarm():
        # Then a send fails in time, saying why
        with fails_in_time() as raised:
            publisher.publish(a_message(queue))
        assert "blocking publishers" in raised.value.reason
        # And so does one on a new connection
        with fails_in_time():
            make_publisher().publish(a_message(queue))
    # When the alarm clears, Then the same publisher sends again
    message = a_message(queue)
    publisher.publish(message)
    assert message.message_id in take_all(queue)


# --- (6) threads ----------------------------------------------------------------------------------


def test_many_threads_publish_through_one_publisher(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given one publisher shared by many threads
    publisher = make_publisher(proxy.url(), timeout=5.0)
    publisher.publish(a_message(queue))  # the main thread's connection
    threads, per_thread = 16, 5
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                publisher.publish(a_message(queue))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            publisher.close()

    # When they all publish at once
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    # Then every message was confirmed and is in the queue
    assert errors == []
    assert count(queue) == 1 + threads * per_thread
    # And each thread used a connection of its own, once
    assert proxy.accepted == 1 + threads


def test_a_forked_child_uses_a_connection_of_its_own(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a publisher whose connection is open in this process
    publisher = make_publisher(proxy.url())
    publisher.publish(a_message(queue))

    # When a forked child (a gunicorn worker, say) publishes through the same object
    def child() -> int:
        publisher.publish(a_message(queue))
        return 0

    # Then it succeeded on a new connection, and the parent's connection still works
    assert in_a_forked_child(child) == 0
    publisher.publish(a_message(queue))
    assert proxy.accepted == 2
    assert count(queue) == 3


# --- (7) delays -----------------------------------------------------------------------------------


def test_a_delayed_message_goes_to_the_delay_queue_with_an_eta(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    amqp.check_a_delayed_message_goes_to_the_delay_queue_with_an_eta(make_publisher(), queue)


# --- the broker says no: nack, unroutable, a channel error ----------------------------------------


def test_a_nacked_message_fails_at_once(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    amqp.check_a_nacked_message_fails_at_once(make_publisher(), queue)


def test_an_unroutable_message_fails_and_the_queue_is_declared_again(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    amqp.check_an_unroutable_message_fails_and_the_queue_is_declared_again(make_publisher(), queue)


def test_a_channel_error_fails_and_the_next_send_reconnects(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    amqp.check_a_channel_error_fails_and_the_next_send_reconnects(make_publisher, queue)
