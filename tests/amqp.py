"""Helpers of the publisher tests: the unit tests (no RabbitMQ) and the fault tests (a real one).

ConfirmingPublisher is tested in tests/test_publishing.py and
tests/integration/test_publishing_faults.py; the body of a test that another way of waiting
for confirms would have to pass too is a ``check_…`` function here, which the test calls as
``amqp.check_…``.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import current_millis, dq_name, xq_name
from dramatiq.middleware import Middleware

from django_messenger.exceptions import BrokerUnavailable
from django_messenger.publishing.rabbitmq import ConfirmingPublisher
from tests.faultproxy import FaultProxy

RABBITMQ = ("127.0.0.1", 5672)
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
#: The publish timeout of the tests against a real RabbitMQ (the unit tests use a shorter one).
TIMEOUT = 1.0
#: Room for the test's own overhead (threads, pika's logging) on a loaded machine.
MARGIN = 1.0

P = TypeVar("P", bound=ConfirmingPublisher)


# --- messages, middleware, failures ---------------------------------------------------------------


def a_message(queue_name: str = "unit", **options: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue_name, actor_name="noop", args=(1,), kwargs={}, options=options)


class Recorder(Middleware):
    """Dramatiq middleware that records the enqueue hooks: (hook, message id, delay)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(("before_enqueue", message.message_id, delay))

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(("after_enqueue", message.message_id, delay))


@contextmanager
def fails_in_time(timeout: float = TIMEOUT) -> Iterator[pytest.ExceptionInfo[BrokerUnavailable]]:
    """Assert that the block raises BrokerUnavailable within ``timeout`` plus the margin."""
    start = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        yield raised
    elapsed = time.monotonic() - start
    assert elapsed < timeout + MARGIN, f"failed after {elapsed:.2f} s, beyond {timeout} s + {MARGIN} s"
    assert raised.value.__cause__ is not None, "BrokerUnavailable must be chained to its cause"


def in_a_forked_child(child: Callable[[], int]) -> int:
    """Run ``child`` in a forked process (a gunicorn worker, say); its exit code, 1 if it raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            status = child()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# --- without RabbitMQ -----------------------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def a_broker_on_a_closed_port() -> RabbitmqBroker:
    return RabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{closed_port()}", confirm_delivery=True)


@contextmanager
def a_broker_on_black_holes(
    upstream: tuple[str, int], hosts: int = 1
) -> Iterator[tuple[RabbitmqBroker, list[FaultProxy]]]:
    """A broker (with confirms) whose ``hosts`` hosts are FaultProxies that accept and never answer."""
    with ExitStack() as stack:
        proxies = [stack.enter_context(FaultProxy(upstream=upstream)) for _ in range(hosts)]
        for proxy in proxies:
            proxy.blackhole()
        url = ";".join(proxy.url() for proxy in proxies)
        yield RabbitmqBroker(url=url, confirm_delivery=True), proxies


def check_a_closed_port_fails_at_once_running_only_the_before_hook(
    publisher: ConfirmingPublisher, timeout: float
) -> None:
    """A publisher whose broker cannot be reached: the send fails in time, after before_enqueue only."""
    recorder = Recorder()
    publisher.broker.add_middleware(recorder)
    message = a_message()
    with fails_in_time(timeout) as raised:
        publisher.publish(message)
    assert "Could not connect to RabbitMQ" in raised.value.reason
    assert recorder.calls == [("before_enqueue", message.message_id, None)]


def check_caches_one_per_broker_and_timeout(
    get: Callable[[RabbitmqBroker, float], ConfirmingPublisher], clear: Callable[[], None]
) -> None:
    """``get(broker, timeout)``: a cached publisher; ``clear()`` forgets (and closes) them all."""
    first, second = RabbitmqBroker(host="127.0.0.1"), RabbitmqBroker(host="127.0.0.1")
    try:
        assert get(first, 5) is get(first, 5.0)
        assert get(first, 5) is not get(first, 1)
        assert get(first, 5) is not get(second, 5)
        assert get(second, 5).broker is second
    finally:
        clear()
    # After clearing, one is made again on demand
    assert get(first, 5) is not None
    clear()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionError:
            pass  # the proxy resets its upstream connections too


class _EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


@pytest.fixture(name="echo_server")
def echo_server_fixture() -> Iterator[tuple[str, int]]:
    """A TCP echo server on 127.0.0.1 (an ephemeral port): a FaultProxy's upstream in unit tests."""
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield (str(host), int(port))
    server.shutdown()
    server.server_close()
    thread.join(5)


# --- against a real RabbitMQ ----------------------------------------------------------------------


@contextmanager
def admin() -> Iterator[Any]:
    """A channel straight to RabbitMQ (no proxy), for looking at and cleaning queues."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        yield connection.channel()
    finally:
        connection.close()


def delete_queues(*names: str) -> None:
    with admin() as channel:
        for name in names:
            for queue in (name, dq_name(name), xq_name(name)):
                channel.queue_delete(queue)


def take(queue_name: str) -> tuple[Any, dramatiq.Message[Any]] | None:
    """The next message of a queue (acknowledged), with its properties; None when empty."""
    with admin() as channel:
        method, properties, body = channel.basic_get(queue_name, auto_ack=True)
        if method is None:
            return None
        return properties, dramatiq.Message.decode(body)


def take_within(queue_name: str, seconds: float) -> tuple[Any, dramatiq.Message[Any]] | None:
    """The next message of a queue, waiting up to ``seconds`` for it; None if none came."""
    deadline = time.monotonic() + seconds
    while (taken := take(queue_name)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return taken


def take_all(queue_name: str) -> list[str]:
    """The ids of every message of a queue, in order (all taken off it)."""
    ids = []
    while (taken := take(queue_name)) is not None:
        ids.append(taken[1].message_id)
    return ids


def count(queue_name: str) -> int:
    with admin() as channel:
        return int(channel.queue_declare(queue_name, passive=True).method.message_count)


def declare_rejecting(publisher: ConfirmingPublisher, queue: str) -> None:
    """A queue that nacks every publish (full at length 0, overflow reject-publish)."""
    arguments = publisher.broker._build_queue_arguments(queue)
    with admin() as channel:
        channel.queue_declare(
            queue, durable=True, arguments={**arguments, "x-max-length": 0, "x-overflow": "reject-publish"}
        )
    publisher.broker.declare_queue(queue)
    publisher.broker.queues_pending.discard(queue)  # so the publisher does not declare it again


@contextmanager
def publisher_maker(
    publisher_class: type[P], after_close: Callable[[P], None] = lambda publisher: None
) -> Iterator[Callable[..., P]]:
    """``make(url, timeout, **broker_options)``: publishers on fresh brokers, closed at the end.

    ``after_close`` checks each publisher once it is closed.
    """
    made: list[P] = []

    def make(url: str = RABBITMQ_URL, timeout: float = TIMEOUT, **options: Any) -> P:
        options.setdefault("confirm_delivery", True)
        publisher = publisher_class(RabbitmqBroker(url=url, **options), timeout)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.close()
        after_close(publisher)


# --- checks both publishers pass against a real RabbitMQ ------------------------------------------


def check_a_published_message_is_in_the_queue(publisher: ConfirmingPublisher, queue: str) -> None:
    # Given middleware recording the enqueue hooks
    recorder = Recorder()
    publisher.broker.add_middleware(recorder)
    message = a_message(queue, broker_priority=None)
    # When a message is published
    sent = publisher.publish(message)
    # Then it is in the queue, persistent, and the hooks ran around the send
    taken = take(queue)
    assert taken is not None
    properties, received = taken
    assert received.message_id == message.message_id == sent.message_id
    assert properties.delivery_mode == 2
    assert recorder.calls == [
        ("before_enqueue", message.message_id, None),
        ("after_enqueue", message.message_id, None),
    ]
    # And the broker knows the queue and its delay queue, as after Dramatiq's own enqueue
    assert queue in publisher.broker.get_declared_queues()
    assert dq_name(queue) in publisher.broker.get_declared_delay_queues()


def check_the_message_is_sent_without_confirms(publisher: ConfirmingPublisher, queue: str) -> None:
    assert not publisher.confirm_delivery
    message = a_message(queue)
    publisher.publish(message)
    taken = take_within(queue, 5)
    assert taken is not None and taken[1].message_id == message.message_id


def check_one_connection_carries_every_call(
    publisher: ConfirmingPublisher, proxy: FaultProxy, queue: str
) -> None:
    for _ in range(5):
        publisher.publish(a_message(queue))
    assert proxy.accepted == 1
    assert count(queue) == 5


def check_a_delayed_message_goes_to_the_delay_queue_with_an_eta(
    publisher: ConfirmingPublisher, queue: str
) -> None:
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


def check_a_fault_before_connecting_fails_in_time(
    fault: str, publisher: ConfirmingPublisher, proxy: FaultProxy, queue: str
) -> pytest.ExceptionInfo[BrokerUnavailable]:
    """``fault`` is a FaultProxy method: reset, blackhole. The failure, for more checks."""
    getattr(proxy, fault)()
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    return raised


def check_black_hole_on_an_open_connection_fails_in_time(
    declared: bool, publisher: ConfirmingPublisher, proxy: FaultProxy, queue: str
) -> None:
    # Given a publisher with an open connection (and the queue declared, or not yet)
    other = f"{queue}_warmup"
    try:
        publisher.publish(a_message(queue if declared else other))
        # When the network silently drops everything
        proxy.blackhole()
        # Then the send fails in time, saying that no confirm came
        with fails_in_time() as raised:
            publisher.publish(a_message(queue))
        assert "did not confirm" in raised.value.reason
    finally:
        delete_queues(other)


def check_a_fault_fails_in_time_and_the_same_publisher_recovers(
    fault: str, publisher: ConfirmingPublisher, proxy: FaultProxy, queue: str
) -> list[str]:
    """The ids of the messages in the queue after; the last one published is the last of them."""
    # Given a working publisher that then fails because of the network
    publisher.publish(a_message(queue))
    getattr(proxy, fault)()
    with fails_in_time():
        publisher.publish(a_message(queue))
    # When the network comes back
    proxy.restore()
    # Then the same publisher object sends again, with no restart
    message = a_message(queue)
    publisher.publish(message)
    ids = take_all(queue)
    assert ids[-1] == message.message_id
    return ids


def check_recovers_from_a_connection_reset_while_idle(
    publisher: ConfirmingPublisher, proxy: FaultProxy, queue: str
) -> None:
    # Given a publisher whose connection the network reset while it sat idle
    publisher.publish(a_message(queue))
    proxy.reset()
    proxy.restore()
    # When it sends again, Then it works at once
    publisher.publish(a_message(queue))
    assert count(queue) == 2


def check_a_nacked_message_fails_at_once(publisher: ConfirmingPublisher, queue: str) -> None:
    # Given a queue that rejects every publish
    declare_rejecting(publisher, queue)
    # When a message is published, Then the nack fails it, and says so
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "basic.nack" in raised.value.reason


def check_an_unroutable_message_fails_and_the_queue_is_declared_again(
    publisher: ConfirmingPublisher, queue: str
) -> None:
    # Given a publisher that declared its queue, which someone then deleted
    publisher.publish(a_message(queue))
    with admin() as channel:
        channel.queue_delete(queue)
    # When it publishes, Then the message is returned unroutable and the send fails
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "could not route" in raised.value.reason
    # And the next send declares the queue again and works
    message = a_message(queue)
    publisher.publish(message)
    taken = take(queue)
    assert taken is not None and taken[1].message_id == message.message_id


def check_a_channel_error_fails_and_the_next_send_reconnects(
    make_publisher: Callable[..., ConfirmingPublisher], queue: str
) -> None:
    # Given a queue declared with other arguments than Dramatiq's (406 PRECONDITION_FAILED)
    with admin() as channel:
        channel.queue_declare(queue, durable=False)
    publisher = make_publisher()
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    # (the reason, for the log, names RabbitMQ's refusal and what to do about it)
    assert "PRECONDITION_FAILED" in raised.value.reason
    # When the queue is fixed, Then the same publisher works again
    with admin() as channel:
        channel.queue_delete(queue)
    publisher.publish(a_message(queue))
    assert count(queue) == 1
