"""PipelinedPublisher against a real RabbitMQ, through a FaultProxy that injects network faults.

Every call either gets the broker's confirm or fails with BrokerUnavailable within the
publish timeout (plus a margin for the test's own overhead); concurrent calls share one
connection; after a fault the same publisher recovers by itself. RabbitMQ must listen on
127.0.0.1:5672 (guest/guest): the tests skip when it does not, except in CI (``CI`` set).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import current_millis, dq_name

from django_messenger.exceptions import BrokerUnavailable
from django_messenger.pipelining import PipelinedPublisher
from tests.faultproxy import FaultProxy
from tests.integration.test_publishing_faults import (
    MARGIN,
    RABBITMQ,
    RABBITMQ_URL,
    TIMEOUT,
    Recorder,
    a_message,
    admin,
    count,
    delete_queues,
    fails_in_time,
    take,
)
from tests.integration.test_publishing_faults import (
    queue as queue,  # noqa: F401 - a fixture
)
from tests.integration.test_publishing_faults import (
    rabbitmq as rabbitmq,  # noqa: F401 - an autouse fixture: skip without RabbitMQ
)

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(upstream=RABBITMQ) as running:
        yield running


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., PipelinedPublisher]]:
    """Build pipelined publishers on fresh brokers; their I/O threads are stopped after the test."""
    made: list[PipelinedPublisher] = []

    def make(url: str = RABBITMQ_URL, timeout: float = TIMEOUT, **options: Any) -> PipelinedPublisher:
        options.setdefault("confirm_delivery", True)
        publisher = PipelinedPublisher(RabbitmqBroker(url=url, **options), timeout)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.close()
        thread = publisher.io_thread
        assert thread is None or not thread.is_alive()


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
    publisher = make_publisher(proxy.url())
    recorder = Recorder()
    publisher.broker.add_middleware(recorder)
    message = a_message(queue, broker_priority=None)
    sent = publisher.publish(message)
    taken = take(queue)
    assert taken is not None
    properties, received = taken
    assert received.message_id == message.message_id == sent.message_id
    assert properties.delivery_mode == 2
    assert recorder.calls == ["before_enqueue", "after_enqueue"]
    assert queue in publisher.broker.get_declared_queues()
    assert dq_name(queue) in publisher.broker.get_declared_delay_queues()


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
    publisher = make_publisher(proxy.url())
    for _ in range(5):
        publisher.publish(a_message(queue))
    assert proxy.accepted == 1
    assert count(queue) == 5


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
    ids = set()
    while (taken := take(queue)) is not None:
        ids.add(taken[1].message_id)
    assert ids == {message.message_id for message in sent}
    # And one connection carried them all
    assert proxy.accepted == 1


def test_without_confirms_the_message_is_still_sent(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(confirm_delivery=False)
    message = a_message(queue)
    publisher.publish(message)
    deadline = time.monotonic() + 5
    while (taken := take(queue)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert taken is not None and taken[1].message_id == message.message_id


def test_a_delayed_message_goes_to_the_delay_queue_with_an_eta(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher()
    before = current_millis()
    sent = publisher.publish(a_message(queue), delay=60_000)
    assert sent.queue_name == dq_name(queue)
    taken = take(dq_name(queue))
    assert taken is not None
    received = taken[1]
    assert received.message_id == sent.message_id
    assert received.queue_name == dq_name(queue)
    assert before + 60_000 <= received.options["eta"] <= current_millis() + 60_000
    assert take(queue) is None


# --- a broker that cannot be reached --------------------------------------------------------------


def test_a_reset_connection_attempt_fails_in_time(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    proxy.reset()
    with fails_in_time():
        publisher.publish(a_message(queue))


def test_black_hole_before_connecting_fails_in_time(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    proxy.blackhole()
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "Could not connect" in str(raised.value.detail)


@pytest.mark.parametrize("declared", [True, False], ids=["waiting-for-confirm", "declaring-the-queue"])
def test_black_hole_on_an_open_connection_fails_in_time(
    declared: bool, proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    other = f"{queue}_warmup"
    try:
        publisher.publish(a_message(queue if declared else other))
        proxy.blackhole()
        with fails_in_time() as raised:
            publisher.publish(a_message(queue))
        assert "did not confirm" in str(raised.value.detail)
    finally:
        delete_queues(other)


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
    ids = []
    while (taken := take(queue)) is not None:
        ids.append(taken[1].message_id)
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
    publisher.publish(a_message(queue))
    getattr(proxy, fault)()
    with fails_in_time():
        publisher.publish(a_message(queue))
    proxy.restore()
    message = a_message(queue)
    publisher.publish(message)
    ids = []
    while (taken := take(queue)) is not None:
        ids.append(taken[1].message_id)
    assert ids[-1] == message.message_id


def test_recovers_from_a_connection_reset_while_idle(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    # Given a publisher whose connection the network reset while it sat idle
    publisher = make_publisher(proxy.url())
    publisher.publish(a_message(queue))
    proxy.reset()
    proxy.restore()
    # When it sends again, Then it works at once, on a new connection
    publisher.publish(a_message(queue))
    assert count(queue) == 2
    assert proxy.accepted == 2


# --- the broker says no ---------------------------------------------------------------------------


def declare_rejecting(publisher: PipelinedPublisher, queue: str) -> None:
    """A queue that nacks every publish (full at length 0, overflow reject-publish)."""
    arguments = publisher.broker._build_queue_arguments(queue)
    with admin() as channel:
        channel.queue_declare(
            queue, durable=True, arguments={**arguments, "x-max-length": 0, "x-overflow": "reject-publish"}
        )
    publisher.broker.declare_queue(queue)
    publisher.broker.queues_pending.discard(queue)  # so the publisher does not declare it again


def test_a_nacked_message_fails_at_once_and_the_connection_stays(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    declare_rejecting(publisher, queue)
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "basic.nack" in str(raised.value.detail)
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
        assert all("basic.nack" in str(error.detail) for error in errors)  # type: ignore[attr-defined]
        assert count(queue) == 160
    finally:
        delete_queues(rejecting)


def test_an_unroutable_message_fails_and_the_queue_is_declared_again(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    publisher = make_publisher()
    publisher.publish(a_message(queue))
    with admin() as channel:
        channel.queue_delete(queue)
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "could not route" in str(raised.value.detail)
    message = a_message(queue)
    publisher.publish(message)
    taken = take(queue)
    assert taken is not None and taken[1].message_id == message.message_id


def test_a_channel_error_fails_and_the_next_send_reconnects(
    queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    with admin() as channel:
        channel.queue_declare(queue, durable=False)
    publisher = make_publisher()
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "406" in str(raised.value.detail)
    with admin() as channel:
        channel.queue_delete(queue)
    publisher.publish(a_message(queue))
    assert count(queue) == 1


# --- processes ------------------------------------------------------------------------------------


def test_a_forked_child_gets_an_io_thread_and_a_connection_of_its_own(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., PipelinedPublisher]
) -> None:
    # Given a publisher whose I/O thread and connection run in this process
    publisher = make_publisher(proxy.url())
    publisher.publish(a_message(queue))
    parent_thread = publisher.io_thread
    # When a forked child (a gunicorn worker, say) publishes through the same object
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            publisher.publish(a_message(queue))
            own = publisher.io_thread
            status = 0 if own is not None and own is not parent_thread and own.is_alive() else 2
            publisher.close()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    # Then it succeeded with its own I/O thread on a new connection, and the parent's still works
    assert os.waitstatus_to_exitcode(status) == 0
    publisher.publish(a_message(queue))
    assert publisher.io_thread is parent_thread
    assert proxy.accepted == 2
    assert count(queue) == 3
