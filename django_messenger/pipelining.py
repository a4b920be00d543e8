"""Publisher confirms shared by the threads of a process: one I/O thread pipelines every publish.

:class:`~django_messenger.publishing.ConfirmingPublisher` gives each thread its own
connection and waits, in that thread, for each message's confirm: one broker round trip per
message, one message at a time per connection. Under threaded web workers (gunicorn
``gthread``) that wait is most of a request's cost. :class:`PipelinedPublisher` keeps
``ConfirmingPublisher``'s public shape and its guarantees (listed below) but sends every
thread's messages through **one connection per process**, owned by **one I/O thread**:

* A request thread encodes the message, runs ``before_enqueue``, hands the message to the
  I/O thread through a thread-safe queue and waits on the message's own future (a lock) for
  at most the time left of its deadline, ``time.monotonic() + timeout``. ``after_enqueue``
  runs in that thread once the broker confirmed. ``publish`` itself is
  ``ConfirmingPublisher.publish`` (inherited): the same delay queue and ``eta``, body,
  properties, ``mandatory`` flag and middleware hooks; only ``_send`` differs.
* The I/O thread publishes each message as soon as it arrives, without waiting for the
  confirms of earlier ones (pipelining), and matches the broker's ``basic.ack`` /
  ``basic.nack`` (``multiple=True`` included, and in any order) to the waiting futures by
  delivery tag. N concurrent requests then share one round trip instead of queueing for N.

Why pika's asynchronous ``SelectConnection``
--------------------------------------------

A ``BlockingConnection`` in confirm mode publishes one message and then blocks until its
confirm: it cannot pipeline, which is the whole point here (driving the channel under it,
``BlockingChannel._impl``, would mean using the asynchronous API through a private door).
``SelectConnection`` is pika's asynchronous connection: ``basic_publish`` only queues
frames, ``confirm_delivery`` takes a callback for every ack/nack, and its ``IOLoop`` has the
one thread-safe entry point we need, ``add_callback_threadsafe``, which wakes the loop
through a socket pair. Everything pika does happens on the I/O thread; request threads touch
only the hand-over queue (under a lock) and their futures. Hand-overs are coalesced: a burst
of messages wakes the loop once.

The guarantees of ``ConfirmingPublisher``, and how they are kept
---------------------------------------------------------------

* **One deadline per call, whatever the broker or the network does.** The waiting thread
  never depends on the I/O thread to come back: it waits on its future with the time left
  and, when that runs out, settles the future itself (under the same lock the I/O thread
  settles with, so exactly one side wins) and raises
  :class:`~django_messenger.exceptions.BrokerUnavailable`. A message whose caller gave up is
  skipped if it was not published yet. The I/O thread enforces the same bound on its side so
  that a dead connection is replaced: connecting is bounded by ``stack_timeout`` (the time
  left of the latest waiting call, shared among the hosts still to try, one attempt each,
  through :func:`~django_messenger.publishing.bounded_parameters`), and a watchdog timer on
  the I/O loop tears the connection down (``_terminate_stream``, as pika's heartbeat checker
  does) when a confirm, a queue declaration or the channel set-up has been owed for
  ``timeout`` seconds: a black hole. A refused connection fails the waiting calls at once.
* **Resource alarms** (``connection.blocked``): nothing is published on a blocked connection;
  the messages wait and their calls fail at their deadline saying that RabbitMQ blocks
  publishers, and pika's ``blocked_connection_timeout`` (= ``timeout``) drops the connection.
  A message that was never published cannot be delivered after its caller got a 503.
* **Nack and unroutable** fail their own call only; the connection stays. An unroutable
  message (``mandatory=True`` makes RabbitMQ return it, before its ack) marks its queue to be
  declared again, as Dramatiq does. Returns carry no delivery tag, so a return is matched to
  its message by body (each body holds a unique message id).
* **Any other error discards the connection**, and the next message reconnects: the broker
  coming back needs no restart. The I/O thread runs the I/O loop all the time, so it answers
  heartbeats and sees a close or a reset when it happens, not at the next publish. When the
  connection or the channel is lost, what was on it is settled at once: a message not
  published yet gets one more try on the next connection within its deadline; a published,
  unconfirmed message gets one more try too when the *connection* was lost (a reset, a
  broker restart: exactly ``ConfirmingPublisher``'s one retry on a connection that died
  under it, which here also covers a message handed over in the instant the connection
  died), and fails at once otherwise (its deadline, a block, a channel error, a second
  loss). A message is published again only when its connection was lost before its confirm
  arrived: at-least-once, as Dramatiq's own retries are.
* **Queues** are declared as ``ConfirmingPublisher`` and Dramatiq declare them: the canonical
  queue, its delay queue and its dead-letter queue, with Dramatiq's arguments, when the
  broker lists the queue in ``queues_pending``. Messages for a queue being declared wait for
  the last ``declare-ok`` (their order is kept).
* **Fork safety**: the I/O thread, its connection and its queue belong to the process that
  made them (``os.getpid()`` is checked on every call). A forked child (a gunicorn worker)
  forgets what it inherited, never touching the parent's socket, and starts its own I/O
  thread on its first publish; locks are re-created in the child (``os.register_at_fork``).

Without ``confirm_delivery`` a call returns once pika took the message (at-most-once,
knowingly). ``close()`` stops the I/O thread (closing its connection gracefully for at most
``CLOSE_TIMEOUT`` seconds); the next ``publish`` starts a new one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import dq_name, xq_name
from pika.adapters.select_connection import IOLoop, SelectConnection

from .exceptions import BrokerUnavailable
from .publishing import (
    CLOSE_TIMEOUT,
    ConfirmingPublisher,
    DeadlineExceeded,
    PublisherCache,
    _ConnectFailed,
    bounded_parameters,
)

__all__ = ["PipelinedPublisher", "clear_pipelined_publishers", "get_pipelined_publisher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The states of a message.
QUEUED = "queued"  # handed over, not published yet (waiting for a connection, a declaration, an unblock)
PUBLISHED = "published"  # on the wire, waiting for its confirm

# The states of the I/O thread's connection.
IDLE = "idle"  # none
CONNECTING = "connecting"  # TCP, TLS and AMQP handshake
OPENING = "opening"  # channel.open and confirm.select
READY = "ready"
CLOSING = "closing"


class _Pending:
    """One message on its way, and the future its caller waits on."""

    __slots__ = (
        "canonical_queue_name",
        "queue_name",
        "body",
        "properties",
        "deadline",
        "state",
        "sent_at",
        "returned",
        "retried",
        "settled",
        "detail",
        "cause",
        "_done",
    )

    def __init__(
        self, canonical_queue_name: str, queue_name: str, body: bytes, properties: Any, deadline: float
    ) -> None:
        self.canonical_queue_name = canonical_queue_name
        self.queue_name = queue_name
        self.body = body
        self.properties = properties
        self.deadline = deadline
        self.state = QUEUED
        self.sent_at = 0.0
        #: RabbitMQ returned it (unroutable); its ack follows.
        self.returned = False
        #: Already carried over to a second connection once.
        self.retried = False
        self.settled = False
        #: Why it failed (None: confirmed), and the exception behind it.
        self.detail: str | None = None
        self.cause: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()


class _Unconfirmed(Generic[T]):
    """Published messages waiting for their confirm, by delivery tag (1, 2, … per channel).

    Pure bookkeeping, no I/O: ``add`` numbers a message as RabbitMQ will (the channel's
    n-th publish after ``confirm.select`` has tag n); ``confirm`` removes and returns what a
    ``basic.ack`` / ``basic.nack`` settles: one tag, or with ``multiple`` every tag up to it
    (every tag when it is 0), whatever was confirmed before and in whatever order.
    """

    def __init__(self) -> None:
        self._items: OrderedDict[int, T] = OrderedDict()
        self._next_tag = 1

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> int:
        tag = self._next_tag
        self._next_tag += 1
        self._items[tag] = item
        return tag

    def confirm(self, tag: int, multiple: bool) -> list[T]:
        items = self._items
        if not multiple:
            item = items.pop(tag, None)
            return [] if item is None else [item]
        confirmed: list[T] = []
        while items:
            first = next(iter(items))
            if tag and first > tag:
                break
            confirmed.append(items.popitem(last=False)[1])
        return confirmed

    def oldest(self) -> T | None:
        return next(iter(self._items.values()), None)

    def values(self) -> Iterable[T]:
        return self._items.values()

    def take_all(self) -> list[T]:
        items = list(self._items.values())
        self._items.clear()
        return items


class _Pipeline:
    """One process's I/O thread, its connection and the messages on their way."""

    def __init__(self, publisher: PipelinedPublisher) -> None:
        self.publisher = publisher
        self.broker: RabbitmqBroker = publisher.broker
        self.timeout = publisher.timeout
        self.confirm = publisher.confirm_delivery
        self.pid = os.getpid()
        self.ioloop = IOLoop()
        #: Guards the hand-over queue and the settling of every future.
        self.lock = threading.Lock()
        self._incoming: deque[_Pending] = deque()
        self._wake_pending = False
        self.stopping = False
        # Only the I/O thread touches what follows.
        self.state = IDLE
        #: A SelectConnection (typed Any: pika's private ``_terminate_stream`` is used on it).
        self.connection: Any = None
        self.channel: Any = None
        self.blocked = False
        self._host = 0
        self._waiting: deque[_Pending] = deque()
        self._declaring: dict[str, list[_Pending]] = {}
        #: When each pending declaration, and the channel set-up, was asked for.
        self._asked: dict[str, float] = {}
        self._unconfirmed: _Unconfirmed[_Pending] = _Unconfirmed()
        self._watchdog: Any = None
        self._close_timer: Any = None
        #: How often the watchdog looks for answers owed longer than the timeout.
        self.tick = min(max(self.timeout / 4, 0.01), 0.25)
        self.thread = threading.Thread(target=self._run, name=f"messenger-publisher-{self.pid}", daemon=True)

    def start(self) -> _Pipeline:
        self.thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self.pid == os.getpid() and not self.stopping and self.thread.is_alive()

    # --- the request threads' side --------------------------------------------------------------

    def submit(self, item: _Pending) -> None:
        """Hand ``item`` to the I/O thread (any thread)."""
        with self.lock:
            if self.stopping:
                self._settle_locked(
                    item,
                    "The publisher was closed while the message was being sent; it counts as not sent.",
                    pika.exceptions.ConnectionClosedByClient(200, "publisher closed"),
                )
                return
            self._incoming.append(item)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            self.ioloop.add_callback_threadsafe(self._drain)

    def wait(self, item: _Pending) -> None:
        """Wait for ``item``'s confirm until its deadline; raise BrokerUnavailable unless confirmed."""
        remaining = item.deadline - time.monotonic()
        if not (remaining > 0 and item._done.acquire(timeout=remaining)):
            with self.lock:
                if not item.settled:
                    cause = self._timeout_cause(item)
                    self._settle_locked(item, self.explain(cause), cause)
        if item.detail is not None:
            raise BrokerUnavailable(item.detail) from item.cause

    def _timeout_cause(self, item: _Pending) -> BaseException:
        """What a call that ran out of time waited for (read racily: it only words the error)."""
        if self.blocked:
            blocked: BaseException = pika.exceptions.ConnectionBlockedTimeout(
                "RabbitMQ blocked the connection"
            )
            return blocked
        if item.state == QUEUED and self.state in (IDLE, CONNECTING):
            return _ConnectFailed(DeadlineExceeded(f"no connection to RabbitMQ within {self.timeout} s"))
        return DeadlineExceeded(f"no answer from RabbitMQ within {self.timeout} s")

    # --- settling (any thread) ------------------------------------------------------------------

    def _settle_locked(
        self, item: _Pending, detail: str | None = None, cause: BaseException | None = None
    ) -> None:
        if item.settled:
            return
        item.settled = True
        item.detail = detail
        item.cause = cause
        item._done.release()

    def settle(self, item: _Pending, detail: str | None = None, cause: BaseException | None = None) -> None:
        with self.lock:
            self._settle_locked(item, detail, cause)

    def explain(self, cause: BaseException) -> str:
        if self.blocked and not isinstance(cause, pika.exceptions.ConnectionBlockedTimeout):
            cause = pika.exceptions.ConnectionBlockedTimeout(repr(cause))
        return self.publisher._explain(cause, None)

    # --- the I/O thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                self.ioloop.start()
            except Exception as exc:  # a bug or a pika surprise: never leave a caller hanging
                logger.exception("The RabbitMQ publisher's I/O thread failed; dropping its connection.")
                self._recover(exc)
                continue
            break
        self.ioloop.close()

    def _recover(self, exc: BaseException) -> None:
        """After an exception escaped the I/O loop: fail what was on its way, start clean."""
        connection, self.connection, self.channel = self.connection, None, None
        self.state, self.blocked = IDLE, False
        self._watchdog = self._close_timer = None
        self._fail(list(self._unconfirmed.take_all()) + self._take_declaring() + list(self._waiting), exc)
        self._waiting.clear()
        if connection is not None and not connection.is_closed:
            try:
                connection._terminate_stream(exc if isinstance(exc, Exception) else None)
            except Exception:  # pragma: no cover - best effort
                logger.debug("Could not abort the publisher's connection.", exc_info=True)
        # The loop itself may be damaged: a new one; request threads wake it through submit().
        old, self.ioloop = self.ioloop, IOLoop()
        with self.lock:
            self._wake_pending = bool(self._incoming)
            stopping = self.stopping
        try:
            old.close()
        except Exception:  # pragma: no cover
            logger.debug("Could not close the publisher's old I/O loop.", exc_info=True)
        if stopping:
            self.ioloop.add_callback_threadsafe(self.ioloop.stop)
        elif self._wake_pending:
            self.ioloop.add_callback_threadsafe(self._drain)

    def _drain(self) -> None:
        with self.lock:
            self._wake_pending = False
            items, self._incoming = self._incoming, deque()
        self._waiting.extend(items)
        self._pump()

    def _pump(self) -> None:
        """Publish what waits, or get a connection for it."""
        if self.state == IDLE:
            if self._live_waiting():
                self._host = 0
                self._connect()
            return
        if self.state != READY or self.blocked:
            self._arm_watchdog()
            return
        pending = self.broker.queues_pending
        waiting = self._waiting
        while waiting:
            item = waiting.popleft()
            if item.settled:
                continue
            queue = item.canonical_queue_name
            declaring = self._declaring.get(queue)
            if declaring is not None:
                declaring.append(item)
            elif queue in pending:
                self._declaring[queue] = [item]
                self._declare(queue)
            else:
                self._publish(item)
        self._arm_watchdog()

    def _live_waiting(self) -> list[_Pending]:
        live = [item for item in self._waiting if not item.settled]
        self._waiting = deque(live)
        return live

    def _publish(self, item: _Pending) -> None:
        with self.lock:
            if item.settled:  # its caller gave up: never send it
                return
            item.state = PUBLISHED
        item.sent_at = time.monotonic()
        try:
            self.channel.basic_publish(
                exchange="",
                routing_key=item.queue_name,
                body=item.body,
                properties=item.properties,
                mandatory=self.confirm,
            )
        except Exception as exc:
            # The channel or connection went away under us; its close callback follows.
            self.settle(item, self.explain(exc), exc)
            return
        if self.confirm:
            self._unconfirmed.add(item)
        else:
            self.settle(item)

    def _declare(self, queue: str) -> None:
        """Declare the queue, its delay queue and its dead-letter queue, as Dramatiq does."""
        arguments = self.broker._build_queue_arguments(queue)
        channel = self.channel
        self._asked[queue] = time.monotonic()

        def declared(_frame: Any) -> None:
            if channel is not self.channel:
                return
            self.broker.queues_pending.discard(queue)
            self._asked.pop(queue, None)
            for item in self._declaring.pop(queue, []):
                self._publish(item)

        try:
            channel.queue_declare(queue=queue, durable=True, arguments=arguments)
            channel.queue_declare(queue=dq_name(queue), durable=True, arguments=arguments)
            channel.queue_declare(
                queue=xq_name(queue),
                durable=True,
                arguments={"x-message-ttl": DEAD_MESSAGE_TTL},
                callback=declared,
            )
        except Exception as exc:
            # The channel went away under us; its close callback follows.
            self._asked.pop(queue, None)
            self._fail(self._declaring.pop(queue, []), exc)

    # Confirms and returns.

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        items = self._unconfirmed.confirm(method.delivery_tag, method.multiple)
        if isinstance(method, pika.spec.Basic.Nack):
            for item in items:
                self.settle(
                    item,
                    f"RabbitMQ refused the message for queue {item.queue_name!r} (basic.nack), for instance "
                    "because the queue is full and rejects publishes; nothing was sent.",
                    pika.exceptions.NackError([]),
                )
            return
        for item in items:
            if item.returned:
                self.broker.queues_pending.add(item.canonical_queue_name)
                self.settle(
                    item,
                    f"RabbitMQ could not route the message to queue {item.queue_name!r} (was the queue "
                    "deleted?); nothing was sent. The queue will be declared again on the next send.",
                    pika.exceptions.UnroutableError([]),
                )
            else:
                self.settle(item)

    def _on_return(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        # A return carries no delivery tag: find the message by its body (unique message id).
        for item in self._unconfirmed.values():
            if not item.returned and item.body == body:
                item.returned = True
                return
        logger.debug("RabbitMQ returned a message this publisher does not wait for (%r).", method)

    # The connection.

    def _connect(self) -> None:
        hosts = self.publisher.parameters
        live = self._live_waiting()
        remaining = max(item.deadline for item in live) - time.monotonic() if live else 0.0
        if remaining <= 0:
            self._fail_connect(DeadlineExceeded(f"no connection to RabbitMQ within {self.timeout} s"))
            return
        share = remaining / (len(hosts) - self._host)
        parameters = bounded_parameters(
            hosts[self._host], connect_timeout=share, blocked_timeout=self.timeout
        )
        self.state = CONNECTING
        try:
            self.connection = SelectConnection(
                parameters,
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
                custom_ioloop=self.ioloop,
            )
        except Exception as exc:
            self.connection = None
            self._on_open_error(None, exc)

    def _on_open_error(self, connection: Any, exc: BaseException) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self.state = IDLE
        logger.debug("Could not connect to RabbitMQ host #%d: %r", self._host, exc)
        self._host += 1
        if self._host < len(self.publisher.parameters) and self._live_waiting() and not self.stopping:
            self._connect()
            return
        self._host = 0
        self._fail_connect(exc)
        if self.stopping:
            self.ioloop.stop()

    def _fail_connect(self, exc: BaseException) -> None:
        cause = _ConnectFailed(exc)
        self._fail(list(self._waiting), cause)
        self._waiting.clear()

    def _on_open(self, connection: Any) -> None:
        if connection is not self.connection:
            return
        self.state = OPENING
        self._asked[""] = time.monotonic()  # the channel set-up is owed
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        self._unconfirmed = _Unconfirmed()
        self.channel = connection.channel(on_open_callback=self._on_channel_open)
        self._arm_watchdog()

    def _on_channel_open(self, channel: Any) -> None:
        if channel is not self.channel:
            return
        channel.add_on_close_callback(self._on_channel_closed)
        if self.confirm:
            channel.add_on_return_callback(self._on_return)
            channel.confirm_delivery(self._on_confirm, callback=self._on_ready)
        else:
            self._on_ready(None)

    def _on_ready(self, _frame: Any) -> None:
        if self.state != OPENING:
            return
        self._asked.pop("", None)
        self.state = READY
        self._pump()

    def _on_blocked(self, _connection: Any, _frame: Any) -> None:
        logger.warning("RabbitMQ blocks publishers (a resource alarm); messages wait or fail.")
        self.blocked = True
        self._arm_watchdog()

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        self.blocked = False
        self._pump()

    def _on_channel_closed(self, channel: Any, exc: BaseException) -> None:
        if channel is not self.channel:
            return
        self.channel = None
        self._lose(exc)
        if self.state == OPENING:
            # The set-up failed (confirm.select refused…): no new attempt for these.
            self._fail_connect(exc)
        connection = self.connection
        if connection is not None and connection.is_open:
            # The channel failed but the connection lives: close it, bounded; a new one follows.
            self.state = CLOSING
            self._close_bounded(connection)

    def _on_closed(self, connection: Any, exc: BaseException) -> None:
        if connection is not self.connection:
            return
        was = self.state
        self._lose(exc)
        self.connection = None
        self.channel = None
        self.state = IDLE
        self.blocked = False
        self._asked.clear()
        if self._close_timer is not None:
            self.ioloop.remove_timeout(self._close_timer)
            self._close_timer = None
        if self.stopping:
            self.ioloop.stop()
            return
        if was in (CONNECTING, OPENING):
            # It never became usable: like a failed connection, no new attempt for these.
            self._fail_connect(exc)
            return
        self._pump()

    def _lose(self, exc: BaseException) -> None:
        """The channel or the connection is gone: settle or carry over what was on it.

        A message gets one more try on the next connection (within its deadline) when it was
        not published yet, or when it was published and the connection was lost (not
        dropped for its deadline, not blocked): as ``ConfirmingPublisher`` retries once on a
        connection that died under it. Everything else fails with the reason.
        """
        final = isinstance(exc, (DeadlineExceeded, pika.exceptions.ConnectionBlockedTimeout)) or self.stopping
        lost = isinstance(exc, pika.exceptions.AMQPConnectionError) and not final
        now = time.monotonic()
        retry: list[_Pending] = []
        failed: list[_Pending] = []
        for item in self._unconfirmed.take_all():
            (retry if lost and not item.retried and item.deadline > now else failed).append(item)
        for item in self._take_declaring():
            (retry if not final and not item.retried and item.deadline > now else failed).append(item)
        self._fail(failed, exc)
        for item in retry:
            item.retried = True
            item.returned = False
            item.state = QUEUED
        self._waiting.extendleft(reversed(retry))

    def _take_declaring(self) -> list[_Pending]:
        items = [item for queue in self._declaring.values() for item in queue]
        self._declaring.clear()
        for queue in [name for name in self._asked if name]:
            del self._asked[queue]
        return items

    def _fail(self, items: Iterable[_Pending], exc: BaseException) -> None:
        detail = self.explain(exc)
        with self.lock:
            for item in items:
                self._settle_locked(item, detail, exc)

    def _close_bounded(self, connection: Any) -> None:
        try:
            connection.close()
        except Exception:
            logger.debug("Closing the publisher's connection failed.", exc_info=True)
            return
        self._close_timer = self.ioloop.call_later(
            CLOSE_TIMEOUT, lambda: self._abort(connection, "closing the connection took too long")
        )

    def _abort(self, connection: Any, reason: str) -> None:
        if connection is self.connection and not connection.is_closed:
            connection._terminate_stream(DeadlineExceeded(reason))

    # The watchdog: a connection that owes an answer for longer than the timeout is dead.

    def _arm_watchdog(self) -> None:
        if self._watchdog is None and (len(self._unconfirmed) or self._asked or self.blocked):
            self._watchdog = self.ioloop.call_later(self.tick, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        if self.connection is None:
            return
        now = time.monotonic()
        oldest = self._unconfirmed.oldest()
        owed = [when for when in self._asked.values()]
        if oldest is not None:
            owed.append(oldest.sent_at)
        if owed and now - min(owed) >= self.timeout:
            self._abort(self.connection, f"no answer from RabbitMQ within {self.timeout} s")
            return
        if self.blocked:
            self._live_waiting()  # forget the messages whose callers gave up
        self._arm_watchdog()

    # Stopping.

    def stop(self, timeout: float) -> None:
        """Fail what waits, close the connection (gracefully, bounded) and end the I/O thread."""
        with self.lock:
            self.stopping = True
            incoming, self._incoming = self._incoming, deque()
        self._fail(incoming, pika.exceptions.ConnectionClosedByClient(200, "publisher closed"))
        if self.pid != os.getpid():
            return  # the parent's: never touch it
        try:
            self.ioloop.add_callback_threadsafe(self._shutdown)
        except Exception:  # pragma: no cover - the loop is gone
            return
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _shutdown(self) -> None:
        cause = pika.exceptions.ConnectionClosedByClient(200, "publisher closed")
        self._fail(list(self._waiting) + self._take_declaring() + self._unconfirmed.take_all(), cause)
        self._waiting.clear()
        connection = self.connection
        if connection is None or connection.is_closed:
            self.ioloop.stop()
        elif connection.is_open:
            self._close_bounded(connection)
        elif not connection.is_closing:
            connection._terminate_stream(DeadlineExceeded("publisher closed"))


class PipelinedPublisher(ConfirmingPublisher):
    """Publishes Dramatiq messages to a :class:`RabbitmqBroker` through one I/O thread per process.

    Same calls and guarantees as :class:`~django_messenger.publishing.ConfirmingPublisher`
    (``publish(message, *, delay=None)`` returns once the broker confirmed, or raises
    :class:`~django_messenger.exceptions.BrokerUnavailable` within ``timeout`` seconds), but
    concurrent calls share one connection and their confirms are pipelined. See the module's
    documentation for the design.
    """

    def __init__(self, broker: RabbitmqBroker, timeout: float) -> None:
        super().__init__(broker, timeout)
        self._lock = threading.Lock()
        self._pipeline: _Pipeline | None = None
        _instances.add(self)

    def _send(
        self,
        canonical_queue_name: str,
        queue_name: str,
        body: bytes,
        properties: pika.BasicProperties,
        deadline: float,
    ) -> None:
        item = _Pending(canonical_queue_name, queue_name, body, properties, deadline)
        pipeline = self._current_pipeline()
        pipeline.submit(item)
        pipeline.wait(item)

    def _current_pipeline(self) -> _Pipeline:
        pipeline = self._pipeline
        if pipeline is not None and pipeline.alive:
            return pipeline
        with self._lock:
            pipeline = self._pipeline
            if pipeline is None or not pipeline.alive:
                # None yet, closed, or inherited through fork(): forgotten, never closed.
                pipeline = self._pipeline = _Pipeline(self).start()
            return pipeline

    @property
    def io_thread(self) -> threading.Thread | None:
        """This process's I/O thread, once a message was published (for tests and diagnostics)."""
        pipeline = self._pipeline
        return pipeline.thread if pipeline is not None and pipeline.pid == os.getpid() else None

    def close(self) -> None:
        """Stop this process's I/O thread and close its connection (bounded by ``CLOSE_TIMEOUT``).

        Calls waiting at that moment fail; the next ``publish`` starts a new I/O thread.
        """
        with self._lock:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None and pipeline.pid == os.getpid():
            pipeline.stop(CLOSE_TIMEOUT + 0.5)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._pipeline = None


_instances: weakref.WeakSet[PipelinedPublisher] = weakref.WeakSet()
_publishers: PublisherCache[PipelinedPublisher] = PublisherCache(PipelinedPublisher)


def get_pipelined_publisher(broker: RabbitmqBroker, timeout: float) -> PipelinedPublisher:
    """The :class:`PipelinedPublisher` of ``broker`` and ``timeout``, made once and cached."""
    return _publishers.get(broker, timeout)


def clear_pipelined_publishers() -> None:
    """Forget every cached pipelined publisher, stopping their I/O threads (bounded)."""
    _publishers.clear()


def _after_fork_in_child() -> None:
    """The child has one thread: locks another thread held at fork() would never be released."""
    _publishers.after_fork_in_child()
    for publisher in list(_instances):
        publisher._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
