"""The publish deadline's one timer per connection, against a real RabbitMQ behind a FaultProxy.

ConfirmingPublisher keeps one deadline timer per connection, re-armed only when it fires
(docs/performance.md): a call writes its deadline on the session, and the timer, firing
while pika polls during a later call, either ends that call (its deadline passed) or waits
on. These tests hold it to what the per-call timer did: a black hole still fails in time, a
timer left by an earlier call never ends a later call early, and a publisher recovers.
(The full fault suite, tests/integration/test_publishing_faults.py, runs the same checks and
more; this module runs without its memory alarm.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from django_messenger.publishing.rabbitmq import ConfirmingPublisher
from tests import amqp
from tests.amqp import a_message, count, fails_in_time, publisher_maker
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("rabbitmq")]


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., ConfirmingPublisher]]:
    with publisher_maker(ConfirmingPublisher) as make:
        yield make


def test_one_timer_serves_every_call_of_a_connection(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a publisher with a connection
    publisher = make_publisher()
    publisher.publish(a_message(queue))
    session = publisher._current_session()
    assert session is not None and session.timer is not None
    timer = session.timer
    # When it publishes again, well within its timeout
    for _ in range(20):
        publisher.publish(a_message(queue))
    # Then the same timer bounded every call (none armed and removed per publish)
    assert publisher._current_session() is session
    assert session.timer is timer
    assert count(queue) == 21


def test_a_timer_left_by_an_earlier_call_does_not_end_a_later_one(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a publisher whose connection sat idle past the deadline of its last call
    timeout = 0.5
    publisher = make_publisher(proxy.url(), timeout=timeout)
    publisher.publish(a_message(queue))
    time.sleep(timeout * 3)
    # When it publishes again (the old timer fires during this call)
    for _ in range(3):
        publisher.publish(a_message(queue))
    # Then the calls succeed on the same connection: the timer re-armed itself instead of ending them
    assert proxy.accepted == 1
    assert count(queue) == 4
    # And it still bounds the next call: a black hole fails within the timeout
    proxy.blackhole()
    with fails_in_time(timeout) as raised:
        publisher.publish(a_message(queue))
    assert "did not confirm" in raised.value.reason


@pytest.mark.parametrize("declared", [True, False], ids=["waiting-for-confirm", "declaring-the-queue"])
def test_black_hole_on_an_open_connection_fails_in_time(
    declared: bool, proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    amqp.check_black_hole_on_an_open_connection_fails_in_time(declared, publisher, proxy, queue)


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
def test_the_same_publisher_recovers_when_the_network_does(
    fault: str, proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    amqp.check_a_fault_fails_in_time_and_the_same_publisher_recovers(fault, publisher, proxy, queue)
