"""Publishing to RabbitMQ with a hard deadline: the broker confirms, or the send fails in time.

Dramatiq's ``RabbitmqBroker.enqueue`` waits for the publisher confirm with no deadline
(pika's ``BlockingChannel.basic_publish`` loops until the confirm or a connection close
arrives) and retries six times, reconnecting each time. A web request cannot afford that:
a black-holed broker would hang it for good. :class:`ConfirmingPublisher` does what
``enqueue`` does (same queues, arguments, delay queue, ``eta`` option, properties and
middleware hooks) but every call either gets the broker's confirm or raises
:class:`~django_messenger.exceptions.BrokerUnavailable` within ``timeout`` seconds.
:func:`django_messenger.publishing.publish` is how messenger uses it.

How the deadline is enforced
----------------------------

The whole call has one deadline, ``time.monotonic() + timeout``, shared by its steps:

* **Connecting** (TCP connect and the AMQP handshake) happens inside pika's
  ``BlockingConnection`` constructor. It is bounded by the connection parameters, copied
  from the broker's and overridden: ``socket_timeout`` (TCP connect) and ``stack_timeout``
  (the whole TCP + TLS + AMQP set-up) are the time left (shared equally among the hosts
  still to try when the broker names several), ``connection_attempts=1`` and
  ``retry_delay=0``. A refused connection fails at once; a black hole fails when
  ``stack_timeout`` expires. (Name resolution is not covered by pika's timers: use an
  address or a host name that resolves locally.)

* **Everything after** (opening the channel, ``confirm.select``, declaring the queues,
  publishing and waiting for the confirm) runs pika's I/O loop, ``BlockingConnection``'s
  ``_flush_output``, which polls the socket *and processes the I/O loop's timers* until
  the awaited reply or a connection close arrives. Each connection has one deadline timer
  on that same I/O loop; when it fires after the current call's deadline it tears the
  connection down with ``_terminate_stream()``, which is exactly what pika's own heartbeat
  checker and ``blocked_connection_timeout`` do. The pending ``basic_publish`` (or
  ``queue_declare``…) then sees the connection closed and raises at once. The poll's own
  timeout is computed from the nearest timer, so the wait ends when the deadline does,
  whatever the socket does: silence (black hole), a reset, or a broker that stopped
  reading because a resource alarm blocks publishers (``connection.blocked``). These are
  private pika methods (``_impl``, ``_adapter_call_later``, ``_terminate_stream``); pika
  has no public way to put a deadline on a blocking call, and ``tests/test_publishing.py``
  checks that they are still there.

  The timer is not armed and removed around every call (that cost about 4 % of a
  confirmed request, docs/performance.md): a call only writes its deadline on the
  connection's session (:func:`_bound`). The timer stays armed between calls; it fires
  only while pika polls, that is during a later call, and then compares the clock with
  *that* call's deadline: not reached yet, it arms itself again for the time left; reached,
  it ends the wait. A call whose deadline comes before the armed timer (closing a
  connection has a shorter budget) moves the timer earlier. A connection therefore arms
  its timer about once per ``timeout`` seconds under load, and never waits past a call's
  deadline.

* An **unroutable** message (returned by ``mandatory=True``) comes back as pika's
  ``UnroutableError`` once the confirm arrives; it fails the call at once. The connection
  stays (it is healthy); the queue is marked to be declared again on the next send, as
  Dramatiq does.

* A **nack** (pika's ``NackError``) discards the connection and the message is published once
  more on a fresh one, within the same deadline; a second nack fails the call. A queue that
  rejects publishes (full, ``x-overflow: reject-publish``) nacks both. A channel that
  published to a quorum queue while its leader was moving (a RabbitMQ node stopped) may go on
  nacking every publish to it, on RabbitMQ 3.10, while a new channel is served: the fresh
  connection is what ends it (tests/integration/test_cluster.py).

* Any other error **discards** the thread's connection: it is closed (gracefully when it is
  still open, bounded by the same timer mechanism and by the time left, at most one
  second) and forgotten, so the next call reconnects. The broker coming back therefore
  needs no restart of the process.

* A connection reused from an earlier call may have died while idle (the broker restarted,
  or closed it for missed heartbeats: a web process calls pika only when it publishes).
  When such a connection fails with a connection error other than the deadline, the call
  reconnects and tries once more, within the same deadline. A message is published again
  only when its connection was lost before its confirm arrived: at-least-once, as
  Dramatiq's own retries are.

Connections are per thread (pika is not thread-safe) and per process: a thread's
connection is created lazily, reused across calls, and forgotten (not closed: the socket
belongs to the parent) when ``os.getpid()`` shows that the process was forked since, so
a forked gunicorn worker never talks on its parent's socket.

One connection per thread is also the fastest way measured here: a pipelined publisher (one
I/O thread per process sharing the confirm waits of every thread) served 1.05x the requests
of this one on gunicorn ``gthread`` and was removed (docs/performance.md, CHANGELOG.md).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pika
import pika.connection
import pika.exceptions
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import current_millis, dq_name, xq_name
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from ..brokers.rabbitmq import dead_letter_arguments, explain_refusal, queue_arguments, queue_type
from ..exceptions import BrokerUnavailable

__all__ = ["ConfirmingPublisher", "bounded_parameters", "clear_publishers", "get_publisher"]

logger = logging.getLogger(__name__)

#: Longest graceful close of a connection being discarded; past it the socket is aborted.
CLOSE_TIMEOUT = 1.0

#: Errors of the broker or the network, as pika raises them once a connection exists.
_IO_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    AMQPConnectorException,
    OSError,
)


class DeadlineExceeded(pika.exceptions.AMQPConnectionError):
    """The deadline of a call expired; the connection was torn down to end the wait."""


@dataclass
class _Session:
    """One thread's connection and channel, and what is known about them."""

    connection: pika.BlockingConnection
    pid: int
    channel: Any = None
    #: RabbitMQ sent ``connection.blocked`` (a resource alarm) and not yet ``unblocked``.
    blocked: bool = False
    #: When the current blocking call must end (``time.monotonic()``), and why, for the timer.
    deadline: float = 0.0
    reason: str = ""
    #: The connection's deadline timer on pika's I/O loop (None when not armed), and when it fires.
    timer: Any = None
    timer_at: float = 0.0

    @property
    def usable(self) -> bool:
        return bool(self.connection.is_open and self.channel is not None and self.channel.is_open)


def bounded_parameters(
    parameters: pika.connection.Parameters, *, connect_timeout: float, blocked_timeout: float
) -> pika.connection.Parameters:
    """A copy of ``parameters`` whose connection set-up ends within ``connect_timeout`` seconds.

    ``socket_timeout`` and ``stack_timeout`` become ``connect_timeout`` (or the broker's own
    value when smaller), ``blocked_connection_timeout`` becomes ``blocked_timeout`` (or
    smaller), and pika makes a single attempt. Host, port, virtual host, credentials,
    heartbeat, TLS and the rest are kept. The original is not modified.
    """
    if connect_timeout <= 0 or blocked_timeout <= 0:
        raise ValueError("connect_timeout and blocked_timeout must be positive.")
    bounded = copy.copy(parameters)
    bounded.socket_timeout = _at_most(parameters.socket_timeout, connect_timeout)
    bounded.stack_timeout = _at_most(parameters.stack_timeout, connect_timeout)
    bounded.blocked_connection_timeout = _at_most(parameters.blocked_connection_timeout, blocked_timeout)
    bounded.connection_attempts = 1
    bounded.retry_delay = 0
    return bounded


def _at_most(value: float | None, bound: float) -> float:
    return bound if value is None else min(float(value), bound)


def _bound(session: _Session, deadline: float, reason: str) -> None:
    """Bound the blocking pika calls made on ``session`` from now on to ``deadline``.

    Past it, the connection's deadline timer aborts the connection, so the pending call
    raises :class:`DeadlineExceeded`. Arms the timer only when it is not armed or would
    fire after ``deadline`` (see the module's documentation).
    """
    session.deadline = deadline
    session.reason = reason
    if session.timer is None or session.timer_at > deadline:
        _arm(session, deadline)


def _arm(session: _Session, at: float) -> None:
    impl = session.connection._impl
    if session.timer is not None:
        try:
            impl._adapter_remove_timeout(session.timer)
        except Exception:  # pragma: no cover - the I/O loop may be gone with the connection
            logger.debug("Could not remove a publish deadline timer.", exc_info=True)
    session.timer_at = at
    session.timer = impl._adapter_call_later(max(at - time.monotonic(), 0.0), partial(_on_timer, session))


def _on_timer(session: _Session) -> None:
    """The deadline timer fired (pika polls only during a call): end the call, or wait on."""
    session.timer = None
    if time.monotonic() < session.deadline:
        _arm(session, session.deadline)  # armed by an earlier call: this one has time left
        return
    impl = session.connection._impl
    if impl is not None and not impl.is_closed:
        impl._terminate_stream(DeadlineExceeded(session.reason))


@contextlib.contextmanager
def deadline(connection: pika.BlockingConnection, seconds: float, reason: str) -> Iterator[None]:
    """Bound every blocking pika call made on ``connection`` in the block to ``seconds``.

    For a connection of its own (``messenger_stats``): the publisher's deadline timer, armed
    once for the block and removed on exit; past it, the pending call raises
    :class:`DeadlineExceeded`.
    """
    session = _Session(connection=connection, pid=os.getpid())
    _bound(session, time.monotonic() + max(seconds, 0.0), reason)
    try:
        yield
    finally:
        session.deadline = 0.0
        if session.timer is not None and connection._impl is not None:
            try:
                connection._impl._adapter_remove_timeout(session.timer)
            except Exception:  # pragma: no cover - the I/O loop may be gone with the connection
                logger.debug("Could not remove a deadline timer.", exc_info=True)


class ConfirmingPublisher:
    """Publishes Dramatiq messages to a :class:`RabbitmqBroker`, each within ``timeout`` seconds.

    :meth:`publish` does what ``RabbitmqBroker.enqueue`` does but never waits longer than
    ``timeout`` seconds: it returns once the broker confirmed the message (or, on a broker
    without ``confirm_delivery``, once it was written) and otherwise raises
    :class:`~django_messenger.exceptions.BrokerUnavailable`. Safe to share between threads:
    each thread has its own connection. See the module's documentation for the design.
    """

    def __init__(self, broker: RabbitmqBroker, timeout: float) -> None:
        timeout = float(timeout)
        if not timeout > 0:
            raise ValueError(f"The publish timeout must be a positive number of seconds, not {timeout!r}.")
        self.broker = broker
        self.timeout = timeout
        self.confirm_delivery = bool(broker.confirm_delivery)
        parameters = broker.parameters
        self.parameters: tuple[pika.connection.Parameters, ...] = (
            tuple(parameters) if isinstance(parameters, Sequence) else (parameters,)
        )
        if not self.parameters:
            raise ValueError("The broker has no connection parameters.")
        self._local = threading.local()
        self._no_answer = f"no answer from RabbitMQ within {self.timeout} s"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} broker={self.broker!r} timeout={self.timeout}>"

    # The public side.

    def publish(
        self,
        message: Message[Any],
        *,
        delay: int | None = None,
        check: Callable[[bytes], None] | None = None,
    ) -> Message[Any]:
        """Send ``message``, like ``RabbitmqBroker.enqueue``, within ``timeout`` seconds.

        ``delay`` (milliseconds) sends it to the delay queue with an ``eta`` option, as
        Dramatiq does. Returns the message that was sent (a copy when delayed). The broker's
        ``before_enqueue`` and ``after_enqueue`` middleware hooks run around the send.
        ``check``, when given, is called with the encoded body before it is sent; what it
        raises propagates, and nothing is sent.

        Raises:
          BrokerUnavailable: the broker did not confirm the message in time, refused it
            (nack), could not route it, or could not be reached. Chained to the cause.
        """
        deadline = time.monotonic() + self.timeout
        canonical_queue_name = message.queue_name
        queue_name = canonical_queue_name
        if delay is not None:
            queue_name = dq_name(canonical_queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})

        # Registers the queue with the broker (and runs its declare hooks) without any I/O;
        # the queue is declared on the server by _ensure_queue, under the deadline.
        self.broker.declare_queue(canonical_queue_name)
        self.broker.emit_before("enqueue", message, delay)
        # Encoded after the before_enqueue hooks, as Dramatiq does: what they change is sent.
        body = message.encode()
        if check is not None:
            check(body)
        properties = pika.BasicProperties(delivery_mode=2, priority=message.options.get("broker_priority"))
        logger.debug("Publishing message %r on queue %r.", message.message_id, queue_name)
        self._send(canonical_queue_name, queue_name, body, properties, deadline)
        self.broker.emit_after("enqueue", message, delay)
        return message

    def close(self) -> None:
        """Close the calling thread's connection, if any (bounded by ``CLOSE_TIMEOUT``).

        pika connections are not thread-safe, so other threads' connections are left alone;
        they close with their threads' process.
        """
        session = self._current_session()
        if session is not None:
            self._discard(session, time.monotonic() + CLOSE_TIMEOUT)

    # The sending, bounded.

    def _send(
        self,
        canonical_queue_name: str,
        queue_name: str,
        body: bytes,
        properties: pika.BasicProperties,
        deadline: float,
    ) -> None:
        retried = False
        while True:
            session = self._current_session()
            reused = session is not None and session.usable
            if session is not None and not reused:
                self._discard(session, deadline)
                session = None
            try:
                if not reused:
                    session = self._connect(deadline)
                assert session is not None
                self._bound(session, deadline)
                self._ensure_queue(session, canonical_queue_name)
                session.channel.basic_publish(
                    exchange="",
                    routing_key=queue_name,
                    body=body,
                    properties=properties,
                    # The broker returns a message no queue took only when mandatory is set, and
                    # that return is seen only with confirms (Dramatiq sets it the same way).
                    mandatory=self.confirm_delivery,
                )
                return
            except pika.exceptions.UnroutableError as exc:
                # The queue was deleted after it was declared: declare it again next time.
                self.broker.queues_pending.add(canonical_queue_name)
                raise BrokerUnavailable(
                    f"RabbitMQ could not route the message to queue {queue_name!r} (was the queue deleted?); "
                    "nothing was sent. The queue will be declared again on the next send."
                ) from exc
            except pika.exceptions.NackError as exc:
                if session is not None:
                    self._discard(session, deadline)
                if not retried and time.monotonic() < deadline:
                    logger.debug("RabbitMQ nacked a message on queue %r: publishing it again.", queue_name)
                    retried = True
                    continue
                raise BrokerUnavailable(
                    f"RabbitMQ refused the message for queue {queue_name!r} (basic.nack), for instance "
                    "because the queue is full and rejects publishes (twice, the second time on a new "
                    "connection); nothing was sent."
                ) from exc
            except _IO_ERRORS as exc:
                if session is not None:
                    self._discard(session, deadline)
                if (
                    reused
                    and not retried
                    and isinstance(exc, pika.exceptions.AMQPConnectionError)
                    and not isinstance(exc, DeadlineExceeded)
                    and time.monotonic() < deadline
                ):
                    # A connection kept from an earlier call died while idle: one fresh try.
                    logger.debug("Reconnecting to RabbitMQ after %r on a reused connection.", exc)
                    retried = True
                    continue
                raise BrokerUnavailable(self._explain(exc, session, canonical_queue_name)) from exc
            except BaseException:
                # Not the broker's fault (or an interrupt): the connection's state is unknown.
                if session is not None:
                    self._discard(session, time.monotonic())
                raise

    def _connect(self, deadline: float) -> _Session:
        """A new connection and channel for this thread, ready within the deadline."""
        error: BaseException | None = None
        connection: pika.BlockingConnection | None = None
        for index, parameters in enumerate(self.parameters):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # The hosts still to try share the time left; a refused one leaves more to the next.
            share = remaining / (len(self.parameters) - index)
            bounded = bounded_parameters(parameters, connect_timeout=share, blocked_timeout=self.timeout)
            try:
                connection = pika.BlockingConnection(bounded)
            except Exception as exc:
                # pika raises several unrelated types here (AMQPConnectionError, its connector
                # errors, socket errors); each means this host did not take a connection.
                logger.debug("Could not connect to RabbitMQ at %s:%s: %r", bounded.host, bounded.port, exc)
                error = exc
                continue
            break
        if connection is None:
            if error is None:
                error = DeadlineExceeded(f"no connection to RabbitMQ within {self.timeout} s")
            raise _ConnectFailed(error) from error

        session = _Session(connection=connection, pid=os.getpid())
        impl = connection._impl
        impl.add_on_connection_blocked_callback(partial(_set_blocked, session, True))
        impl.add_on_connection_unblocked_callback(partial(_set_blocked, session, False))
        try:
            self._bound(session, deadline)
            session.channel = connection.channel()
            if self.confirm_delivery:
                session.channel.confirm_delivery()
        except BaseException:
            self._discard(session, deadline)
            raise
        self._local.session = session
        return session

    def _bound(self, session: _Session, deadline: float) -> None:
        """Bound what follows on ``session`` by ``deadline``; raise when no time is left."""
        if deadline <= time.monotonic():
            raise DeadlineExceeded(f"no time left of the {self.timeout} s publish timeout")
        _bound(session, deadline, self._no_answer)

    def _ensure_queue(self, session: _Session, canonical_queue_name: str) -> None:
        """Declare the queue, its delay queue and its dead-letter queue, as Dramatiq does."""
        pending = self.broker.queues_pending
        if canonical_queue_name not in pending:
            return
        # Dramatiq's own arguments (with the queue type of brokers/rabbitmq.py), so that these
        # declarations match its workers' exactly.
        arguments = queue_arguments(self.broker, canonical_queue_name)
        channel = session.channel
        channel.queue_declare(queue=canonical_queue_name, durable=True, arguments=arguments)
        channel.queue_declare(queue=dq_name(canonical_queue_name), durable=True, arguments=arguments)
        channel.queue_declare(
            queue=xq_name(canonical_queue_name),
            durable=True,
            arguments=dead_letter_arguments(self.broker, canonical_queue_name),
        )
        pending.discard(canonical_queue_name)

    # The thread's connection.

    def _current_session(self) -> _Session | None:
        session: _Session | None = getattr(self._local, "session", None)
        if session is not None and session.pid != os.getpid():
            # Inherited through fork(): the socket is the parent's. Forget it, never close it.
            self._local.session = None
            return None
        return session

    def _discard(self, session: _Session, deadline: float) -> None:
        """Forget ``session`` and close its connection, for at most the time left (or 1 s)."""
        if getattr(self._local, "session", None) is session:
            self._local.session = None
        connection = session.connection
        if not connection.is_open:
            return
        now = time.monotonic()
        budget = min(max(deadline - now, 0.0), CLOSE_TIMEOUT)
        try:
            _bound(session, now + budget, "closing the connection took too long")
            connection.close()
        except Exception as exc:
            logger.debug("Closing a discarded RabbitMQ connection failed: %r", exc)
        session.timer = None  # it went with the connection's I/O loop

    def _explain(self, exc: BaseException, session: _Session | None, queue_name: str) -> str:
        """A sentence for BrokerUnavailable: what happened and what to do."""
        refused = explain_refusal(exc, queue_name, queue_type(self.broker, queue_name))
        if refused is not None:
            logger.error("%s", refused)  # an operator's error: said once per send, whatever logs the 503
            return refused
        if isinstance(exc, _ConnectFailed):
            hosts = ", ".join(f"{p.host}:{p.port}" for p in self.parameters)
            return (
                f"Could not connect to RabbitMQ at {hosts} within the publish timeout of {self.timeout} s "
                f"({exc.cause!r}); nothing was sent. Check that the broker is running and reachable."
            )
        blocked = (session is not None and session.blocked) or isinstance(
            exc, pika.exceptions.ConnectionBlockedTimeout
        )
        if blocked:
            return (
                "RabbitMQ is blocking publishers (a memory or disk alarm) and did not confirm the message "
                f"within the publish timeout of {self.timeout} s; the message counts as not sent."
            )
        if isinstance(exc, DeadlineExceeded):
            return (
                f"RabbitMQ did not confirm the message within the publish timeout of {self.timeout} s "
                "(MESSENGER['PUBLISH_TIMEOUT']); the connection was dropped and the message counts as "
                "not sent."
            )
        if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
            return (
                f"RabbitMQ closed the channel ({exc.reply_code} {exc.reply_text}); "
                "the message counts as not sent."
            )
        return f"The connection to RabbitMQ failed ({exc!r}); the message counts as not sent."


class _ConnectFailed(pika.exceptions.AMQPConnectionError):
    """No host of the broker took a connection; ``cause`` is the last host's error."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.cause = cause


def _set_blocked(session: _Session, blocked: bool, *_args: Any) -> None:
    session.blocked = blocked


class PublisherCache:
    """One publisher per (broker, timeout), made on first use; shared by every thread."""

    def __init__(self) -> None:
        self._publishers: dict[tuple[int, float], ConfirmingPublisher] = {}
        self._lock = threading.Lock()

    def get(self, broker: RabbitmqBroker, timeout: float) -> ConfirmingPublisher:
        key = (id(broker), float(timeout))
        publisher = self._publishers.get(key)  # the common case, without the lock (a dict read is atomic)
        if publisher is not None and publisher.broker is broker:
            return publisher
        with self._lock:
            publisher = self._publishers.get(key)
            # The cache holds the broker, so its id cannot be reused while cached; the check is cheap.
            if publisher is None or publisher.broker is not broker:
                publisher = self._publishers[key] = ConfirmingPublisher(broker, timeout)
            return publisher

    def clear(self) -> None:
        """Forget every publisher, closing each (bounded)."""
        with self._lock:
            publishers = list(self._publishers.values())
            self._publishers.clear()
        for publisher in publishers:
            publisher.close()

    def after_fork_in_child(self) -> None:
        """The child has one thread: a lock another thread held at fork() would never be released."""
        self._lock = threading.Lock()


_publishers = PublisherCache()


def get_publisher(broker: RabbitmqBroker, timeout: float) -> ConfirmingPublisher:
    """The :class:`ConfirmingPublisher` of ``broker`` and ``timeout``, made once and cached."""
    return _publishers.get(broker, timeout)


def clear_publishers() -> None:
    """Forget every cached publisher (tests; a broker replaced at run time).

    The calling thread's connection of each is closed (bounded); other threads' are not.
    """
    _publishers.clear()


os.register_at_fork(after_in_child=_publishers.after_fork_in_child)
