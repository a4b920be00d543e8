"""ConfirmingPublisher against a real RabbitMQ, through a FaultProxy that injects network faults.

Every send either gets the broker's confirm or fails with BrokerUnavailable within the
publish timeout (plus a margin for the test's own overhead); after a fault the same
publisher recovers by itself. RabbitMQ must listen on 127.0.0.1:5672 (guest/guest): the
tests skip when it does not, except in CI (``CI`` set) where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import current_millis, dq_name, xq_name
from dramatiq.middleware import Middleware

from django_messenger.exceptions import BrokerUnavailable
from django_messenger.publishing import ConfirmingPublisher
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

RABBITMQ = ("127.0.0.1", 5672)
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
TIMEOUT = 1.0
#: Room for the test's own overhead (threads, pika's logging) on a loaded machine.
MARGIN = 1.0


def _rabbitmq_is_up() -> bool:
    try:
        socket.create_connection(RABBITMQ, timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def rabbitmq() -> None:
    if not _rabbitmq_is_up():
        message = f"RabbitMQ is not listening on {RABBITMQ[0]}:{RABBITMQ[1]}."
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


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


@pytest.fixture
def queue() -> Iterator[str]:
    """A unique queue name; the queue, its delay and its dead-letter queues are deleted after."""
    name = f"messenger_test_{uuid.uuid4().hex}"
    yield name
    delete_queues(name)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(upstream=RABBITMQ) as running:
        yield running


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., ConfirmingPublisher]]:
    """Build publishers on fresh brokers; their connections are closed after the test."""
    made: list[ConfirmingPublisher] = []

    def make(url: str = RABBITMQ_URL, timeout: float = TIMEOUT, **options: Any) -> ConfirmingPublisher:
        broker = RabbitmqBroker(url=url, confirm_delivery=True, **options)
        publisher = ConfirmingPublisher(broker, timeout)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.close()


def a_message(queue_name: str, **options: Any) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue_name, actor_name="noop", args=(1,), kwargs={}, options=options)


def take(queue_name: str) -> tuple[Any, dramatiq.Message[Any]] | None:
    """The next message of a queue (acknowledged), with its properties; None when empty."""
    with admin() as channel:
        method, properties, body = channel.basic_get(queue_name, auto_ack=True)
        if method is None:
            return None
        return properties, dramatiq.Message.decode(body)


def count(queue_name: str) -> int:
    with admin() as channel:
        return int(channel.queue_declare(queue_name, passive=True).method.message_count)


@contextmanager
def fails_in_time(timeout: float = TIMEOUT) -> Iterator[pytest.ExceptionInfo[BrokerUnavailable]]:
    """Assert that the block raises BrokerUnavailable within ``timeout`` plus the margin."""
    start = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        yield raised
    elapsed = time.monotonic() - start
    assert elapsed < timeout + MARGIN, f"failed after {elapsed:.2f} s, beyond {timeout} s + {MARGIN} s"
    assert raised.value.__cause__ is not None, "BrokerUnavailable must be chained to its cause"


# --- (1) the happy path ---------------------------------------------------------------------------


class Recorder(Middleware):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append("before_enqueue")

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append("after_enqueue")


def test_a_published_message_is_in_the_queue(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a publisher through the proxy, and middleware recording the enqueue hooks
    publisher = make_publisher(proxy.url())
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
    assert recorder.calls == ["before_enqueue", "after_enqueue"]
    # And the broker knows the queue and its delay queue, as after Dramatiq's own enqueue
    assert queue in publisher.broker.get_declared_queues()
    assert dq_name(queue) in publisher.broker.get_declared_delay_queues()


def test_without_confirms_the_message_is_still_sent(queue: str) -> None:
    # Given a broker without publisher confirms (at-most-once, knowingly)
    publisher = ConfirmingPublisher(RabbitmqBroker(url=RABBITMQ_URL), TIMEOUT)
    try:
        # When a message is published, Then it reaches the queue
        message = a_message(queue)
        publisher.publish(message)
        deadline = time.monotonic() + 5
        while (taken := take(queue)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert taken is not None and taken[1].message_id == message.message_id
    finally:
        publisher.close()


def test_the_connection_is_reused(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    for _ in range(5):
        publisher.publish(a_message(queue))
    assert proxy.accepted == 1
    assert count(queue) == 5


# --- (2) a broker that refuses --------------------------------------------------------------------


def test_reset_before_connecting_fails_in_time(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    proxy.reset()
    with fails_in_time():
        publisher.publish(a_message(queue))


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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    publisher = make_publisher(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "Could not connect" in str(raised.value.detail)


# --- (3) a black hole -----------------------------------------------------------------------------


def test_black_hole_before_connecting_fails_in_time(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    publisher = make_publisher(proxy.url())
    proxy.blackhole()
    with fails_in_time():
        publisher.publish(a_message(queue))


@pytest.mark.parametrize("declared", [True, False], ids=["waiting-for-confirm", "declaring-the-queue"])
def test_black_hole_on_an_open_connection_fails_in_time(
    declared: bool, proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a publisher with an open connection (and the queue declared, or not yet)
    publisher = make_publisher(proxy.url())
    other = f"{queue}_warmup"
    try:
        publisher.publish(a_message(queue if declared else other))
        # When the network silently drops everything
        proxy.blackhole()
        # Then the send fails in time, saying that no confirm came
        with fails_in_time() as raised:
            publisher.publish(a_message(queue))
        assert "did not confirm" in str(raised.value.detail)
    finally:
        delete_queues(other)


# --- (4) recovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
def test_the_same_publisher_recovers_when_the_network_does(
    fault: str, proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a working publisher that then fails because of the network
    publisher = make_publisher(proxy.url())
    publisher.publish(a_message(queue))
    getattr(proxy, fault)()
    with fails_in_time():
        publisher.publish(a_message(queue))
    # When the network comes back
    proxy.restore()
    # Then the same publisher object sends again, with no restart
    message = a_message(queue)
    publisher.publish(message)
    messages = [take(queue), take(queue)]
    assert [m[1].message_id for m in messages if m is not None][-1] == message.message_id
    assert take(queue) is None


def test_recovers_from_a_broker_that_closed_an_idle_connection(
    proxy: FaultProxy, queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a publisher whose connection the network reset while it sat idle
    publisher = make_publisher(proxy.url())
    publisher.publish(a_message(queue))
    proxy.reset()
    proxy.restore()
    # When it sends again, Then its one reconnection makes it work at once
    publisher.publish(a_message(queue))
    assert count(queue) == 2


# --- (5) a resource alarm: connection.blocked -----------------------------------------------------


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return result.stdout.strip()


def memory_watermark() -> list[str] | None:
    """The arguments of ``set_vm_memory_high_watermark`` that restore the current value."""
    value = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    if re.fullmatch(r"[0-9.]+", value):
        return [value]
    absolute = re.fullmatch(r'\{absolute,\s*"?([^"}]+)"?\}', value)
    if absolute:
        return ["absolute", absolute.group(1)]
    return None


def wait_for_memory_alarm(active: bool, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alarms = rabbitmqctl("eval", "rabbit_alarm:get_alarms().")
        if ("memory" in alarms) == active:
            return
        time.sleep(0.2)
    raise AssertionError(f"RabbitMQ's memory alarm did not become {'active' if active else 'clear'}.")


def test_a_blocked_connection_fails_in_time_and_recovers(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not available to raise a memory alarm.")
    try:
        original = memory_watermark()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"rabbitmqctl does not work here: {exc}")
    if original is None:
        pytest.skip("Cannot read RabbitMQ's vm_memory_high_watermark to restore it.")

    # Given a publisher whose connection and queue are ready
    publisher = make_publisher()
    publisher.publish(a_message(queue))
    try:
        # When RabbitMQ raises a memory alarm, which blocks every publishing connection
        rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
        wait_for_memory_alarm(active=True)
        # Then a send fails in time, saying why
        with fails_in_time() as raised:
            publisher.publish(a_message(queue))
        assert "blocking publishers" in str(raised.value.detail)
        # And so does one on a new connection
        with fails_in_time():
            make_publisher().publish(a_message(queue))
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", *original)
        wait_for_memory_alarm(active=False)
    # When the alarm clears, Then the same publisher sends again
    message = a_message(queue)
    publisher.publish(message)
    ids = []
    while (taken := take(queue)) is not None:
        ids.append(taken[1].message_id)
    assert message.message_id in ids


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            publisher.publish(a_message(queue))
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    # Then it succeeded on a new connection, and the parent's connection still works
    assert os.waitstatus_to_exitcode(status) == 0
    publisher.publish(a_message(queue))
    assert proxy.accepted == 2
    assert count(queue) == 3


# --- (7) delays -----------------------------------------------------------------------------------


def test_a_delayed_message_goes_to_the_delay_queue_with_an_eta(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
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


# --- the broker says no: nack, unroutable, a channel error ----------------------------------------


def test_a_nacked_message_fails_at_once(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a queue that rejects every publish (full at length 0, overflow reject-publish)
    publisher = make_publisher()
    arguments = publisher.broker._build_queue_arguments(queue)
    with admin() as channel:
        channel.queue_declare(
            queue, durable=True, arguments={**arguments, "x-max-length": 0, "x-overflow": "reject-publish"}
        )
    publisher.broker.declare_queue(queue)
    publisher.broker.queues_pending.discard(queue)  # so the publisher does not declare it again
    # When a message is published, Then the nack fails it, and says so
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "basic.nack" in str(raised.value.detail)


def test_an_unroutable_message_fails_and_the_queue_is_declared_again(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a publisher that declared its queue, which someone then deleted
    publisher = make_publisher()
    publisher.publish(a_message(queue))
    with admin() as channel:
        channel.queue_delete(queue)
    # When it publishes, Then the message is returned unroutable and the send fails
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "could not route" in str(raised.value.detail)
    # And the next send declares the queue again and works
    message = a_message(queue)
    publisher.publish(message)
    taken = take(queue)
    assert taken is not None and taken[1].message_id == message.message_id


def test_a_channel_error_fails_and_the_next_send_reconnects(
    queue: str, make_publisher: Callable[..., ConfirmingPublisher]
) -> None:
    # Given a queue declared with other arguments than Dramatiq's (406 PRECONDITION_FAILED)
    with admin() as channel:
        channel.queue_declare(queue, durable=False)
    publisher = make_publisher()
    with fails_in_time() as raised:
        publisher.publish(a_message(queue))
    assert "406" in str(raised.value.detail)
    # When the queue is fixed, Then the same publisher works again
    with admin() as channel:
        channel.queue_delete(queue)
    publisher.publish(a_message(queue))
    assert count(queue) == 1
