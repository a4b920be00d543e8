"""Unit tests of django_messenger.publishing that need no RabbitMQ, and of tests/faultproxy.py."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from pika.adapters.blocking_connection import BlockingConnection
from pika.adapters.select_connection import SelectConnection

from django_messenger.exceptions import BrokerUnavailable
from django_messenger.publishing import (
    ConfirmingPublisher,
    bounded_parameters,
    clear_publishers,
    get_publisher,
    publish,
)
from django_messenger.publishing.rabbitmq import _Session
from tests import amqp
from tests.amqp import (
    a_broker_on_a_closed_port,
    a_broker_on_black_holes,
    a_message,
    echo_server_fixture,  # noqa: F401 - the echo_server fixture
    fails_in_time,
)
from tests.faultproxy import FaultProxy

TIMEOUT = 0.5


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def proxy(echo_server: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=echo_server) as running:
        yield running


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=2)
    return sock


def echo(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return sock.recv(65536)


# --- publish(): which way each broker is published to ---------------------------------------------


class _RefusingBroker(StubBroker):
    """A non-RabbitMQ broker whose client fails, naming its host as clients do."""

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        raise ConnectionError("Error 111 connecting to 10.9.8.7:6379. Connection refused.")


def test_publish_hands_a_message_to_a_non_rabbitmq_brokers_own_enqueue() -> None:
    # Given a broker that is not RabbitMQ
    broker = StubBroker(middleware=[])
    broker.declare_queue("unit")
    # When a message is published, now and with a delay
    sent = publish(broker, a_message("unit"))
    delayed = publish(broker, a_message("unit"), delay=60_000)
    # Then the broker's own enqueue queued them, the delayed one on the delay queue with an eta
    [queued] = [Message.decode(body) for body in broker.queues["unit"].queue]
    [queued_later] = [Message.decode(body) for body in broker.queues[dq_name("unit")].queue]
    assert queued.message_id == sent.message_id
    assert queued_later.message_id == delayed.message_id
    assert queued_later.options["eta"] > 0


def test_a_failing_enqueue_is_broker_unavailable_chained_to_its_cause() -> None:
    # Given a non-RabbitMQ broker whose client cannot reach its server
    broker = _RefusingBroker(middleware=[])
    broker.declare_queue("unit")
    # When a message is published
    with pytest.raises(BrokerUnavailable) as raised:
        publish(broker, a_message("unit"))
    # Then the reason (for the log) says what happened, chained to the client's error
    assert "10.9.8.7:6379" in raised.value.reason
    assert isinstance(raised.value.__cause__, ConnectionError)
    # And what a client sees names neither the host nor the exception
    detail = str(raised.value.detail)
    assert "10.9.8.7" not in detail and "ConnectionError" not in detail
    assert "Retry" in detail


class _Refusal(Exception):
    """What a publish's check raises in these tests."""


def test_a_check_sees_the_body_and_its_refusal_fails_the_publish_unchanged() -> None:
    # Given a broker, and a check that records the body it is shown and refuses a second one
    broker = StubBroker(middleware=[])
    broker.declare_queue("unit")
    seen: list[bytes] = []

    def check(body: bytes) -> None:
        seen.append(body)
        if len(seen) > 1:
            raise _Refusal("no")

    # When a message is published with the check, Then the check saw the body that was queued
    sent = publish(broker, a_message("unit"), check=check)
    assert list(broker.queues["unit"].queue) == seen == [sent.encode()]
    # When the check refuses the next one, Then its own error fails the publish (not
    # BrokerUnavailable), chained as it was raised, and nothing more was queued
    with pytest.raises(_Refusal) as raised:
        publish(broker, a_message("unit"), check=check)
    assert not isinstance(raised.value, BrokerUnavailable)
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert len(broker.queues["unit"].queue) == 1


def test_a_check_runs_before_rabbitmq_is_contacted() -> None:
    # Given a RabbitMQ broker on a port where nothing listens
    publisher = ConfirmingPublisher(a_broker_on_a_closed_port(), TIMEOUT)

    def refuse(body: bytes) -> None:
        raise _Refusal(len(body))

    # When a message is published with a check that refuses it, Then the refusal comes first
    with pytest.raises(_Refusal):
        publisher.publish(a_message(), check=refuse)


def test_publish_bounds_a_rabbitmq_send_by_publish_timeout(settings: Any) -> None:
    # Given a RabbitMQ broker on a port where nothing listens, and a short PUBLISH_TIMEOUT
    settings.MESSENGER = {**settings.MESSENGER, "PUBLISH_TIMEOUT": TIMEOUT}
    broker = a_broker_on_a_closed_port()
    try:
        # When a message is published, Then messenger's bounded publisher fails it in time
        # (Dramatiq's enqueue would retry six times, reconnecting each time)
        with fails_in_time(TIMEOUT) as raised:
            publish(broker, a_message())
        assert "Could not connect to RabbitMQ" in raised.value.reason
    finally:
        clear_publishers()


# --- the proxy ------------------------------------------------------------------------------------


def test_proxy_forwards(proxy: FaultProxy) -> None:
    # Given a proxy in front of an echo server
    with connect(proxy) as sock:
        # When a client sends bytes through it, Then they come back
        assert echo(sock, b"hello") == b"hello"


def test_proxy_reset_resets_open_and_new_connections(proxy: FaultProxy) -> None:
    # Given an open, working connection
    with connect(proxy) as sock:
        assert echo(sock) == b"ping"
        # When the proxy resets
        proxy.reset()
        # Then the open connection was reset
        with pytest.raises(ConnectionResetError):
            echo(sock)
    # And a new connection is reset too (create_connection itself may see the RST first)
    with pytest.raises(ConnectionResetError), connect(proxy) as sock:
        echo(sock)


def test_proxy_blackhole_swallows_bytes_silently(proxy: FaultProxy) -> None:
    # Given an open, working connection
    with connect(proxy) as sock:
        assert echo(sock) == b"ping"
        # When the proxy black-holes
        proxy.blackhole()
        # Then bytes sent on it are never answered, and it is not closed either
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            echo(sock)
    # And a new connection is accepted but never answered
    with connect(proxy) as sock:
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            echo(sock)


def test_proxy_restore_forwards_again_and_resets_blackholed_connections(proxy: FaultProxy) -> None:
    # Given a connection opened before the proxy black-holed
    with connect(proxy) as sock:
        assert echo(sock) == b"ping"
        proxy.blackhole()
        # When the proxy is restored
        proxy.restore()
        # Then that connection (which lost bytes for good) is reset
        with pytest.raises(ConnectionResetError):
            echo(sock)
    # And new connections are forwarded again
    with connect(proxy) as sock:
        assert echo(sock) == b"ping"


def test_proxy_restore_after_reset(proxy: FaultProxy) -> None:
    proxy.reset()
    proxy.restore()
    with connect(proxy) as sock:
        assert echo(sock) == b"ping"


def test_proxy_stop_joins_its_threads_and_closes_the_port(echo_server: tuple[str, int]) -> None:
    # Given a proxy with an open connection
    proxy = FaultProxy(upstream=echo_server).start()
    sock = connect(proxy)
    assert echo(sock) == b"ping"
    assert proxy.threads
    # When it stops
    proxy.stop()
    # Then no thread of it is left and nothing listens on its port any more
    assert proxy.threads == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=2)
    sock.close()


def test_proxy_refuses_other_hosts() -> None:
    with pytest.raises(ValueError):
        FaultProxy(upstream=("10.0.0.1", 5672))


# --- connection parameters ------------------------------------------------------------------------


def test_bounded_parameters_bound_the_timeouts_and_keep_the_rest() -> None:
    # Given a broker's URL parameters
    original = pika.URLParameters(
        "amqp://ada:secret@127.0.0.1:5679/tenant?heartbeat=30&socket_timeout=20&connection_attempts=5"
    )
    # When they are bounded
    bounded = bounded_parameters(original, connect_timeout=2.5, blocked_timeout=4.0)
    # Then the timeouts are bounded, a single attempt is made…
    assert bounded.socket_timeout == 2.5
    assert bounded.stack_timeout == 2.5
    assert bounded.blocked_connection_timeout == 4.0
    assert bounded.connection_attempts == 1
    assert bounded.retry_delay == 0
    # …and where to connect, as whom, and the heartbeat are kept
    assert (bounded.host, bounded.port, bounded.virtual_host, bounded.heartbeat) == (
        "127.0.0.1",
        5679,
        "tenant",
        30,
    )
    assert (bounded.credentials.username, bounded.credentials.password) == ("ada", "secret")
    # And the broker's own parameters are untouched
    assert original.socket_timeout == 20
    assert original.connection_attempts == 5
    assert original.blocked_connection_timeout is None


def test_bounded_parameters_keep_smaller_values() -> None:
    original = pika.ConnectionParameters(
        host="127.0.0.1", socket_timeout=0.2, stack_timeout=0.3, blocked_connection_timeout=1
    )
    bounded = bounded_parameters(original, connect_timeout=5, blocked_timeout=5)
    assert (bounded.socket_timeout, bounded.stack_timeout, bounded.blocked_connection_timeout) == (
        0.2,
        0.3,
        1,
    )


def test_bounded_parameters_need_positive_timeouts() -> None:
    with pytest.raises(ValueError):
        bounded_parameters(pika.ConnectionParameters(), connect_timeout=0, blocked_timeout=1)


def test_publisher_reads_every_host_of_the_broker() -> None:
    broker = RabbitmqBroker(url="amqp://127.0.0.1:5672;amqp://127.0.0.1:5673", confirm_delivery=True)
    publisher = ConfirmingPublisher(broker, 2)
    assert [p.port for p in publisher.parameters] == [5672, 5673]
    assert publisher.confirm_delivery is True
    assert publisher.timeout == 2.0


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_publisher_needs_a_positive_timeout(timeout: float) -> None:
    with pytest.raises(ValueError):
        ConfirmingPublisher(RabbitmqBroker(host="127.0.0.1"), timeout)


def test_get_publisher_caches_one_per_broker_and_timeout() -> None:
    amqp.check_caches_one_per_broker_and_timeout(get_publisher, clear_publishers)


# --- the deadline, without RabbitMQ ---------------------------------------------------------------


def test_the_private_pika_hooks_of_the_deadline_exist() -> None:
    """The deadline uses pika internals; a pika upgrade that drops them must fail here first."""
    for name in ("_terminate_stream", "_adapter_call_later", "_adapter_remove_timeout", "is_closed"):
        assert hasattr(SelectConnection, name), name
    assert hasattr(BlockingConnection, "_flush_output")


def test_closed_port_fails_at_once_and_runs_only_the_before_hook() -> None:
    # Given a broker on a port where nothing listens
    publisher = ConfirmingPublisher(a_broker_on_a_closed_port(), TIMEOUT)
    # When a message is published, Then it fails within the timeout, saying why, chained to pika's
    # error, and after_enqueue did not run
    amqp.check_a_closed_port_fails_at_once_running_only_the_before_hook(publisher, TIMEOUT)


def test_black_hole_while_connecting_fails_within_the_timeout(echo_server: tuple[str, int]) -> None:
    # Given a server that accepts connections and never answers
    with a_broker_on_black_holes(echo_server) as (broker, _):
        publisher = ConfirmingPublisher(broker, TIMEOUT)
        # When a message is published, Then it fails within the timeout
        with fails_in_time(TIMEOUT):
            publisher.publish(a_message())


def test_all_hosts_share_the_timeout(echo_server: tuple[str, int]) -> None:
    # Given a broker with two hosts that both black-hole
    with a_broker_on_black_holes(echo_server, hosts=2) as (broker, (first, second)):
        publisher = ConfirmingPublisher(broker, TIMEOUT)
        # When a message is published, Then the whole call fits in the timeout
        with fails_in_time(TIMEOUT):
            publisher.publish(a_message())
        # And both hosts were tried
        assert first.accepted >= 1 and second.accepted >= 1


class _FakeConnection:
    is_open = True

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:  # pragma: no cover - must never be called
        self.closed = True


def test_a_forked_process_forgets_its_parents_connection_without_closing_it() -> None:
    # Given a thread's connection made in another process (as seen after fork())
    publisher = ConfirmingPublisher(RabbitmqBroker(host="127.0.0.1"), TIMEOUT)
    inherited = _FakeConnection()
    publisher._local.session = _Session(connection=inherited, pid=os.getpid() + 1)
    # When this process looks for its connection
    session = publisher._current_session()
    # Then it has none (it will connect anew), and the parent's socket was left alone
    assert session is None
    assert inherited.closed is False


def test_a_same_process_connection_is_reused() -> None:
    publisher = ConfirmingPublisher(RabbitmqBroker(host="127.0.0.1"), TIMEOUT)
    own = _Session(connection=_FakeConnection(), pid=os.getpid())
    publisher._local.session = own
    assert publisher._current_session() is own
