"""An at-least-once Dramatiq broker on Apache Kafka, with confluent-kafka (librdkafka).

:class:`KafkaBroker` is a plain Dramatiq broker: any Dramatiq program can use it, with or
without Django (docs/transports.md, "Apache Kafka", has an example). What it does:

* **One topic per Dramatiq queue**: ``<topic_prefix><queue>``, its delay topic
  ``<queue>.DQ`` and its dead-letter topic ``<queue>.DLQ``. They are created (``partitions``
  partitions, ``replication_factor`` replicas: -1, the cluster's ``default.replication.factor``,
  unless given) through the AdminClient the first time the process sends to or consumes the
  queue; a topic that exists is used as it is. A cluster that refuses to create topics
  (authorization, policy) is asked whether they exist instead; with ``create_topics=False`` the
  broker only checks that they exist (the operator creates them).
* **One producer a process**, thread-safe, with ``acks=all`` and ``enable.idempotence=true``.
  A forked child makes its own and keeps the inherited one referenced, never destroyed (its
  librdkafka threads do not exist in the child: destroying it could wait for them forever).
  :meth:`KafkaBroker.enqueue` returns only once that message's delivery report came back
  without error, and waits at most ``publish_timeout`` seconds (``MESSENGER["PUBLISH_TIMEOUT"]``
  under Django, unless given); otherwise it raises :class:`PublishFailed` (a 503 upstream).
  A message larger than ``max_message_size`` raises :class:`MessageTooLargeForKafka` (a 413),
  nothing sent. librdkafka's ``message.timeout.ms`` is the same timeout, so a message that was
  refused with a 503 is not delivered minutes later from the producer's queue.
* **Consumers that commit only what is done.** ``enable.auto.commit`` and
  ``enable.auto.offset.store`` are off, ``auto.offset.reset`` is ``earliest``. A worker thread's
  ack or nack only marks its offset done (:class:`PartitionOffsets`); the consumer's own thread
  (Dramatiq's ``ConsumerThread``, in ``__next__``) commits, partition by partition, up to the
  lowest offset not done yet. A message a killed worker was running is therefore consumed again
  by the next owner of its partition: at-least-once (handlers de-duplicate by message id).
  Commits are asynchronous, one in flight at a time (so a commit never overtakes a newer one),
  and recorded when Kafka's answer comes back. ``close()`` waits at most ``CLOSE_TIMEOUT`` seconds
  for the last one's answer, then (at least a second) for librdkafka to leave the group, which
  waits for every commit still pending; past that it goes on in the background. Offsets not
  committed are read again by the partition's next owner (duplicates, not losses).
* **Dead letters**: a nack produces the message's bytes to ``<queue>.DLQ`` (``acks=all``), waits
  for its delivery report, and only then marks the offset done. A body that is not a Dramatiq
  message goes there too, as it is.
* **Prefetch by pausing partitions**: once ``prefetch`` messages are handed out and not done,
  the consumer pauses its partitions (it keeps polling, so it stays in its group) and resumes
  them when messages are done.
* **Delays, Dramatiq's way**: a delayed message goes to ``<queue>.DQ`` with its due time in the
  ``eta`` option (and an ``eta`` header, for people reading the topic); the worker's consumer of
  the ``.DQ`` queue holds it until due, then enqueues it on ``<queue>`` and acknowledges it, as on
  RabbitMQ. Its offset stays unfinished meanwhile: commits of that ``.DQ`` partition wait for it
  (messenger's ``DELAY_HOP`` bounds such a wait to 10 minutes by default).
* **Revocation**: when the group takes a partition away, its buffered messages are dropped, what
  is done is committed, and acks of its messages still running are ignored: the next owner
  consumes them again from the committed offset.
* **Keys**: a message sent with the ``kafka_key`` option (``actor.send_with_options(...,
  kafka_key="order-42")``) is produced with that key, so one aggregate's messages go to one
  partition, in order.

Nothing read from a topic is imported or executed by name: a body is decoded by Dramatiq's
encoder, and headers are only written, never acted on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any

import dramatiq
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from django.core.exceptions import ImproperlyConfigured
from dramatiq.common import current_millis, dq_name, q_name
from dramatiq.errors import ConnectionClosed, DecodeError

from ..conf import messenger_settings
from ..exceptions import MessageTooLarge

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "KafkaBroker",
    "KafkaConsumer",
    "KafkaMessage",
    "MessageTooLargeForKafka",
    "PartitionOffsets",
    "PublishFailed",
    "SAFE_PRODUCER",
]

logger = logging.getLogger("django_messenger")

#: The suffix of a queue's dead-letter topic.
DEAD_LETTER_SUFFIX = ".DLQ"
#: The message option whose value (a string) becomes the Kafka message key.
KEY_OPTION = "kafka_key"
#: What the producer must have for a delivery report to mean "stored by every in-sync replica, once".
SAFE_PRODUCER: dict[str, Any] = {"acks": "all", "enable.idempotence": True}
#: What a consumer must have for a commit to follow the acks (system check E018).
SAFE_CONSUMER: dict[str, Any] = {"enable.auto.commit": False, "enable.auto.offset.store": False}
#: Errors of a record that mean the broker refuses the idempotent producer's id, epoch or sequence:
#: it was not stored, and the producer will not store any other (tansu answers PRODUCER_FENCED to
#: librdkafka's epoch bump after a message timed out). A new producer sends again.
PRODUCER_STATE_REFUSED = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError._FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.INVALID_PRODUCER_ID_MAPPING,
    }
)
#: librdkafka's default ``message.max.bytes`` (the Kafka server's default is about the same).
DEFAULT_MAX_MESSAGE_SIZE = 1_000_000
#: Seconds a send waits when neither ``publish_timeout`` nor Django's MESSENGER setting gives one.
DEFAULT_PUBLISH_TIMEOUT = 5.0
#: Seconds between two commits of a consumer (when something new is done).
COMMIT_INTERVAL = 0.2
#: How many records one poll of a consumer takes at most.
FETCH_BATCH = 100
#: A consumer buffers up to this many times its prefetch (and at most BUFFER_MAX) fetched messages.
BUFFER_FACTOR = 4
BUFFER_MAX = 1000
#: Seconds a consumer's poll waits at most, so that commits and pauses follow the acks quickly.
POLL_INTERVAL = 0.1
#: Seconds a consumer's close() waits for Kafka's answer to its last commit, and then (at least
#: CLOSE_LEAVE_MIN more seconds) for librdkafka's close, which waits for every pending commit (up to
#: session.timeout.ms without a coordinator); past that, the close goes on in the background. The
#: offsets not committed are read again by the partition's next owner: duplicates, not losses.
CLOSE_TIMEOUT = 5.0
CLOSE_LEAVE_MIN = 1.0
#: Seconds after which a commit still unanswered no longer holds the next one back.
COMMIT_STALL = 30.0
#: The default ``replication_factor``: the cluster's ``default.replication.factor`` (KIP-464, Kafka 2.4).
CLUSTER_DEFAULT = -1
#: Errors of CreateTopics that say "you may not", not "it failed": the topics may exist already
#: (a cluster with ACLs, Confluent Cloud, MSK with IAM answers them even for existing topics).
CREATE_REFUSED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.POLICY_VIOLATION,
    }
)

#: Producers a forked child inherited from its parent: kept referenced for the child's whole life,
#: because freeing one runs librdkafka's destroy, which waits for threads the child does not have.
INHERITED_PRODUCERS: list[Producer] = []
#: Every KafkaBroker of the process, for the fork hook below.
_BROKERS: weakref.WeakSet[KafkaBroker] = weakref.WeakSet()


def _keep_inherited_producers() -> None:
    """In a forked child: move every broker's producer to INHERITED_PRODUCERS (never destroyed)."""
    for broker in list(_BROKERS):
        broker._inherit_producer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_keep_inherited_producers)


class PublishFailed(ConnectionClosed):
    """Kafka did not acknowledge a message in time (or refused it): it may or may not have been stored."""


class MessageTooLargeForKafka(MessageTooLarge):
    """A Dramatiq message larger than the Kafka broker's ``max_message_size``: nothing was sent."""

    def __init__(self, limit: int, size: int) -> None:
        super().__init__(limit, size)
        self.reason = (
            f"The message is {size} bytes encoded, larger than the Kafka broker's max_message_size "
            f"({limit} bytes)."
        )


def _publish_timeout(given: float | None) -> float:
    if given is not None:
        return float(given)
    try:  # under Django: MESSENGER["PUBLISH_TIMEOUT"]; a plain Dramatiq program has no settings
        return float(messenger_settings.PUBLISH_TIMEOUT)
    except ImproperlyConfigured:
        return DEFAULT_PUBLISH_TIMEOUT


class PartitionOffsets:
    """The offsets of one assigned partition handed out and not done yet, and what may be committed.

    The consumer's thread calls :meth:`add` for every message it hands out (offsets increase);
    worker threads call :meth:`done`. :meth:`committable` is the offset to commit, Kafka's "next
    offset to read": the lowest offset not done, or one past the last handed out when all are
    done; None when it is not past what was committed already, or asked to be (a commit in
    flight: :meth:`requested`, then :meth:`committed` or :meth:`commit_failed` once Kafka
    answered). Thread-safe.
    """

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        #: Set when the partition was revoked: later acks of its messages change nothing.
        self.revoked = False
        self._lock = threading.Lock()
        self._order: deque[int] = deque()  # handed out and not committable yet, in order
        self._outstanding: set[int] = set()  # handed out and not done
        self._next: int | None = None  # one past the highest offset handed out
        self._committed: int | None = None  # the highest offset Kafka said it committed
        self._requested: int | None = None  # the offset of a commit sent and not answered yet

    def add(self, offset: int) -> None:
        with self._lock:
            self._order.append(offset)
            self._outstanding.add(offset)
            self._next = offset + 1 if self._next is None else max(self._next, offset + 1)

    def done(self, offset: int) -> None:
        """Mark ``offset`` done (again, or after a revocation: nothing changes)."""
        with self._lock:
            if self.revoked or offset not in self._outstanding:
                return
            self._outstanding.discard(offset)
            while self._order and self._order[0] not in self._outstanding:
                self._order.popleft()

    @property
    def pending(self) -> int:
        """How many handed-out offsets are not done yet."""
        with self._lock:
            return len(self._outstanding)

    def committable(self) -> int | None:
        with self._lock:
            if self._next is None:
                return None
            offset = self._order[0] if self._order else self._next
            for floor in (self._committed, self._requested):
                if floor is not None and offset <= floor:
                    return None
            return offset

    @property
    def last_committed(self) -> int | None:
        """The highest offset Kafka said it committed (None: none yet)."""
        with self._lock:
            return self._committed

    def requested(self, offset: int) -> None:
        """Note that a commit of ``offset`` was sent: it is not offered again while it is in flight."""
        with self._lock:
            if self._requested is None or offset > self._requested:
                self._requested = offset

    def committed(self, offset: int) -> None:
        """Note that Kafka committed ``offset`` (an older answer never moves the record back)."""
        with self._lock:
            if self._committed is None or offset > self._committed:
                self._committed = offset
            if self._requested is not None and self._requested <= self._committed:
                self._requested = None

    def commit_failed(self, offset: int) -> None:
        """Note that the commit of ``offset`` failed (or got no answer): it may be offered again."""
        with self._lock:
            if self._requested == offset:
                self._requested = None


class KafkaMessage(dramatiq.MessageProxy):
    """A Dramatiq message consumed from a Kafka partition: its offset and bytes, for the ack or nack."""

    def __init__(
        self,
        message: dramatiq.Message[Any],
        *,
        offsets: PartitionOffsets,
        offset: int,
        value: bytes,
        key: bytes | None,
    ) -> None:
        super().__init__(message)
        self._offsets = offsets
        self._offset = offset
        self._value = value
        self._key = key


class KafkaBroker(dramatiq.Broker):
    """A Dramatiq broker on Kafka (see the module's documentation).

    Parameters:
      bootstrap_servers: Kafka's ``bootstrap.servers`` (``"host:9092,host2:9092"``).
      group_id: the consumer groups' prefix: a queue's consumers form the group ``<group_id>.<topic>``.
      topic_prefix: put before every queue's name to make its topic's (``""``).
      partitions, replication_factor: of the topics this broker creates (6, and -1: the
        cluster's ``default.replication.factor``, Kafka 2.4+). A message is crash-durable only
        with 3 replicas and the topics' ``min.insync.replicas`` at 2 (system check W018 warns
        below 2 replicas).
      topic_config: the created topics' configuration (``{"min.insync.replicas": "2"}``...).
      create_topics: False when the cluster's operator creates the topics (queue, ``.DQ`` and
        ``.DLQ``): the broker then only checks that they exist.
      publish_timeout: seconds an enqueue waits for its delivery report (None: Django's
        ``MESSENGER["PUBLISH_TIMEOUT"]``, or 5 s without Django).
      session_timeout_ms: the consumers' ``session.timeout.ms`` (45 s, Kafka's default).
      max_message_size: the largest encoded message sent (librdkafka's ``message.max.bytes``).
      producer_config, consumer_config, admin_config: more librdkafka settings (security,
        SASL...). Overriding ``acks``, ``enable.idempotence``, ``enable.auto.commit`` or
        ``enable.auto.offset.store`` loses the at-least-once guarantee (system check E018).
      middleware: as every Dramatiq broker's.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str = "127.0.0.1:9092",
        group_id: str = "dramatiq",
        topic_prefix: str = "",
        partitions: int = 6,
        replication_factor: int = CLUSTER_DEFAULT,
        topic_config: dict[str, str] | None = None,
        create_topics: bool = True,
        publish_timeout: float | None = None,
        session_timeout_ms: int = 45000,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        admin_config: dict[str, Any] | None = None,
        middleware: list[dramatiq.Middleware] | None = None,
    ) -> None:
        super().__init__(middleware=middleware)
        if partitions < 1:
            raise ValueError("'partitions' must be at least 1.")
        if replication_factor != CLUSTER_DEFAULT and replication_factor < 1:
            raise ValueError("'replication_factor' must be at least 1, or -1 for the cluster's default.")
        self.queues: set[str] = set()
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.topic_config = dict(topic_config or {})
        self.create_topics = create_topics
        self.publish_timeout = _publish_timeout(publish_timeout)
        self.session_timeout_ms = session_timeout_ms
        self.max_message_size = max_message_size
        self.producer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            **SAFE_PRODUCER,
            "message.max.bytes": max_message_size,
            # a message refused with a 503 must not be delivered much later from librdkafka's queue
            "message.timeout.ms": max(1, math.ceil(self.publish_timeout * 1000)),
            "linger.ms": 0,
            # back within a second once Kafka is reachable again (librdkafka waits up to 10 s)
            "reconnect.backoff.max.ms": 1000,
            **(producer_config or {}),
        }
        self.consumer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            **SAFE_CONSUMER,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms,
            # a fetch the broker holds back delays the resume of a paused partition by as much
            "fetch.wait.max.ms": 100,
            "fetch.max.bytes": max(52428800, max_message_size),
            "max.partition.fetch.bytes": max(1048576, max_message_size),
            **(consumer_config or {}),
        }
        self.admin_config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, **(admin_config or {})}
        self._producer: Producer | None = None
        self._producer_pid = 0
        #: Counts the producers made: a fatal-error callback names the one it belongs to.
        self._producer_generation = 0
        self._producer_lock = threading.Lock()
        self._created: set[str] = set()
        self._created_lock = threading.Lock()
        _BROKERS.add(self)

    # --- topics -----------------------------------------------------------------------------------

    def topic(self, queue_name: str) -> str:
        """The topic of a Dramatiq queue (``q``, ``q.DQ``) or of its dead letters (``q.DLQ``)."""
        return f"{self.topic_prefix}{queue_name}"

    def dead_letter_topic(self, queue_name: str) -> str:
        return self.topic(q_name(queue_name) + DEAD_LETTER_SUFFIX)

    def declare_queue(self, queue_name: str) -> None:
        """Declare ``queue_name`` and its delay queue; their topics are created on first use."""
        canonical = q_name(queue_name)
        if canonical in self.queues:
            return
        self.emit_before("declare_queue", canonical)
        self.queues.add(canonical)
        self.emit_after("declare_queue", canonical)
        delayed = dq_name(canonical)
        self.delay_queues.add(delayed)
        self.emit_after("declare_delay_queue", delayed)

    def get_declared_queues(self) -> set[str]:
        return set(self.queues)

    def ensure_topics(self, queue_name: str, *, timeout: float | None = None) -> None:
        """Create the topics of ``queue_name`` (queue, ``.DQ``, ``.DLQ``) unless this process did already.

        A cluster that refuses to create them (an authorization or policy error, which clusters with
        ACLs answer even for topics that exist) is asked whether they exist, and they are used when
        they do; with ``create_topics=False`` the broker only asks that. Waits at most ``timeout`` s
        (``publish_timeout``) in all.

        Raises:
          ConnectionClosed: Kafka did not answer in time, refused to create a topic that does not
            exist, or (``create_topics=False``) a topic does not exist.
        """
        canonical = q_name(queue_name)
        if canonical in self._created:
            return
        names = [self.topic(canonical), self.topic(dq_name(canonical)), self.dead_letter_topic(canonical)]
        deadline = time.monotonic() + (self.publish_timeout if timeout is None else timeout)
        admin = AdminClient(self.admin_config)
        if self.create_topics:
            refused = self._create(admin, names, deadline)
        else:
            refused = {name: "create_topics is False" for name in names}
        if refused:
            missing = self._missing(admin, list(refused), deadline)
            if missing:
                raise ConnectionClosed(
                    f"The Kafka topics {missing} do not exist and the broker may not create them "
                    f"({'; '.join(f'{name}: {refused[name]}' for name in missing)}): create them, with "
                    "the queue's .DQ and .DLQ topics."
                )
            logger.info("The Kafka topics %s exist (the broker did not create them).", sorted(refused))
        with self._created_lock:
            self._created.add(canonical)

    def _create(self, admin: AdminClient, names: list[str], deadline: float) -> dict[str, str]:
        """Create ``names``: those the cluster refused to create (by authorization or policy), with why."""
        new = [
            NewTopic(
                name,
                num_partitions=self.partitions,
                replication_factor=self.replication_factor,
                config=self.topic_config,
            )
            for name in names
        ]
        seconds = max(0.001, deadline - time.monotonic())
        futures = admin.create_topics(new, operation_timeout=seconds, request_timeout=seconds)
        refused: dict[str, str] = {}
        for name, future in futures.items():
            try:
                future.result(max(0.001, deadline - time.monotonic()))
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                code = error.code() if isinstance(error, KafkaError) else None
                if code == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if code in CREATE_REFUSED:
                    assert isinstance(error, KafkaError)
                    refused[name] = error.name()
                    continue
                raise ConnectionClosed(exc) from None
            except Exception as exc:  # a future that timed out
                raise ConnectionClosed(exc) from None
            logger.info("Created the Kafka topic %r.", name)
        return refused

    def _missing(self, admin: AdminClient, names: list[str], deadline: float) -> list[str]:
        """Those of ``names`` the cluster's metadata does not list (all topics are asked for: a
        request naming a topic could make a cluster with ``auto.create.topics.enable`` create it)."""
        try:
            metadata = admin.list_topics(timeout=max(0.001, deadline - time.monotonic()))
        except KafkaException as exc:
            raise ConnectionClosed(exc) from None
        return [
            name for name in names if name not in metadata.topics or metadata.topics[name].error is not None
        ]

    # --- producing --------------------------------------------------------------------------------

    @property
    def producer(self) -> Producer:
        """This process's producer (made on first use, again in a forked child or after a fatal error)."""
        pid = os.getpid()
        producer = self._producer
        if producer is None or self._producer_pid != pid:
            if producer is not None:  # inherited through a fork the hook did not see (os.fork is hooked)
                self._inherit_producer()
            with self._producer_lock:
                if self._producer is None or self._producer_pid != pid:
                    self._producer_generation += 1
                    generation = self._producer_generation
                    self._producer = Producer(
                        {
                            **self.producer_config,
                            "error_cb": lambda error: self._on_producer_error(generation, error),
                        }
                    )
                    self._producer_pid = pid
                producer = self._producer
        return producer

    def _inherit_producer(self) -> None:
        """In a forked child: keep the parent's producer referenced forever and make a new one on use.

        Freeing it would run librdkafka's destroy, which waits for the producer's threads: they
        were not forked, so it could wait forever. The locks are new too (another thread of the
        parent may have held them at the fork).
        """
        producer = self._producer
        if producer is not None and self._producer_pid != os.getpid():
            INHERITED_PRODUCERS.append(producer)
            self._producer = None
            self._producer_pid = 0
            self._producer_lock = threading.Lock()
            self._created_lock = threading.Lock()

    def _on_producer_error(self, generation: int, error: KafkaError) -> None:
        """librdkafka's error callback of the producer made as ``generation``: a fatal error drops
        that producer only (a late callback of an old producer leaves the current one alone)."""
        if error.fatal():
            logger.error("The Kafka producer failed for good (%s): the next send makes a new one.", error)
            with self._producer_lock:
                if self._producer is not None and self._producer_generation == generation:
                    self._producer = None

    def _discard_producer(self, producer: Producer) -> None:
        """Forget ``producer`` if it is still the current one; the next send makes another.

        An idempotent producer whose state the broker refuses (a fatal error: fenced, sequence out of
        order after a timeout) cannot send again; a new one gets a new producer id.
        """
        with self._producer_lock:
            if self._producer is producer:
                self._producer = None

    def produce(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Produce one record and wait for its delivery report, at most ``timeout`` s (``publish_timeout``).

        A report with a fatal error (the record was not stored, the producer is unusable) makes a
        new producer, which tries once more within the same time.

        Raises:
          PublishFailed: no report in time, or a report with an error.
        """
        seconds = self.publish_timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        while True:
            producer = self.producer
            error = self._produce_once(producer, topic, value, key, headers, deadline, seconds)
            if error is None:
                return
            if error.fatal() or error.code() in PRODUCER_STATE_REFUSED:
                self._discard_producer(producer)
                if time.monotonic() < deadline:
                    continue
            raise PublishFailed(f"Kafka did not store the message in {topic!r}: {error}")

    def _produce_once(
        self,
        producer: Producer,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None,
        deadline: float,
        seconds: float,
    ) -> KafkaError | None:
        reported = threading.Event()
        outcome: list[KafkaError | None] = []

        def on_delivery(error: KafkaError | None, record: Any) -> None:
            outcome.append(error)
            reported.set()

        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:  # librdkafka's queue is full: serve reports, then try again
                if time.monotonic() >= deadline:
                    raise PublishFailed(f"the producer's queue stayed full for {seconds:g} s") from None
                producer.poll(0.05)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError):
                    return error
                raise PublishFailed(f"the producer refused the message: {exc}") from None
        while not reported.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishFailed(f"no delivery report from Kafka within {seconds:g} s (topic {topic!r})")
            producer.poll(min(remaining, 0.05))
        return outcome[0]

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Send ``message`` (to ``<queue>.DQ`` when delayed by ``delay`` ms) and wait for Kafka's report.

        Raises:
          PublishFailed: not acknowledged within ``publish_timeout`` (it may still be stored).
          MessageTooLargeForKafka: larger than ``max_message_size``; nothing sent.
        """
        canonical = message.queue_name
        if delay is not None:
            message = message.copy(
                queue_name=dq_name(canonical), options={"eta": current_millis() + max(0, delay)}
            )
        if q_name(message.queue_name) not in self.queues:
            raise dramatiq.QueueNotFound(message.queue_name)
        deadline = time.monotonic() + self.publish_timeout
        self.emit_before("enqueue", message, delay)
        body = message.encode()
        if len(body) > self.max_message_size:
            raise MessageTooLargeForKafka(self.max_message_size, len(body))
        self.ensure_topics(canonical, timeout=self.publish_timeout)
        headers: list[tuple[str, str | bytes | None]] = [("dramatiq-message-id", message.message_id.encode())]
        if "eta" in message.options:
            headers.append(("eta", str(message.options["eta"]).encode()))
        key = message.options.get(KEY_OPTION)
        self.produce(
            self.topic(message.queue_name),
            body,
            key=None if key is None else str(key).encode(),
            headers=headers,
            timeout=max(0.0, deadline - time.monotonic()),
        )
        self.emit_after("enqueue", message, delay)
        return message

    # --- consuming --------------------------------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> KafkaConsumer:
        if q_name(queue_name) not in self.queues:
            raise dramatiq.QueueNotFound(queue_name)
        self.ensure_topics(queue_name)
        return KafkaConsumer(self, queue_name, prefetch=prefetch, timeout=timeout)

    def consumer_group(self, queue_name: str) -> str:
        """The consumer group of ``queue_name``'s consumers."""
        return f"{self.group_id}.{self.topic(queue_name)}"

    def close(self) -> None:
        """Flush this process's producer (at most ``publish_timeout`` s); an inherited one is kept."""
        self._inherit_producer()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(self.publish_timeout)


class KafkaConsumer(dramatiq.Consumer):
    """One Dramatiq queue's consumer: a confluent-kafka consumer used by the consumer thread only.

    Worker threads call :meth:`ack` and :meth:`nack`, which touch only the thread-safe
    :class:`PartitionOffsets` (and the producer, for a dead letter).
    """

    def __init__(self, broker: KafkaBroker, queue_name: str, *, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.topic = broker.topic(queue_name)
        self.prefetch = max(1, prefetch)
        #: Messages fetched and not handed out yet, at most (the partitions are paused beyond).
        self.buffer_size = max(self.prefetch, min(BUFFER_FACTOR * self.prefetch, BUFFER_MAX))
        self.timeout = timeout / 1000
        self.buffer: deque[KafkaMessage] = deque()
        self.offsets: dict[int, PartitionOffsets] = {}
        self.paused: set[int] = set()
        self._last_commit = 0.0
        #: The commit sent and not answered yet (one at a time): its partitions' offsets, and when.
        self._in_flight: list[tuple[PartitionOffsets, int]] | None = None
        self._in_flight_since = 0.0
        self._closed = False
        #: Set by worker threads' acks and nacks: room for the messages waiting in the buffer.
        self._acked = threading.Event()
        config = {
            **broker.consumer_config,
            "group.id": broker.consumer_group(queue_name),
            "on_commit": self._on_commit,
        }
        self.consumer = Consumer(config)
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    # --- the group's rebalances (called from inside consume(), on the consumer thread) -------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.offsets[tp.partition] = PartitionOffsets(tp.topic, tp.partition)
            self.paused.discard(tp.partition)
        logger.debug("Kafka assigned %s partitions %s.", self.topic, [tp.partition for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # What is done, before another consumer starts from the commit (unless a commit is in
        # flight: then that one is what the next owner starts from, and it reads the rest again)
        self.commit(force=True)
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)  # no longer ours: a commit would be refused

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {tp.partition for tp in partitions}
        for partition in gone:
            offsets = self.offsets.pop(partition, None)
            if offsets is not None:
                offsets.revoked = True
            self.paused.discard(partition)
        self.buffer = deque(m for m in self.buffer if m._offsets.partition not in gone)

    # --- committing and flow control --------------------------------------------------------------

    def commit(self, *, force: bool = False) -> bool:
        """Send a commit of every partition's lowest unfinished offset that moved; True when one was sent.

        At most every COMMIT_INTERVAL (unless ``force``), and never while another commit is in
        flight: librdkafka may retry a request, and a retried older commit landing after a newer
        one would move the group's offset back. Asynchronous: a commit never blocks (a synchronous
        one waits without end while the group has no coordinator); :meth:`_on_commit` records
        Kafka's answer, served by the consumer's polls. A commit unanswered for COMMIT_STALL
        seconds no longer holds the next one back.
        """
        now = time.monotonic()
        if self._in_flight is not None:
            if now - self._in_flight_since < COMMIT_STALL:
                return False
            logger.warning(
                "A commit of %r got no answer in %g s: committing again.", self.topic, COMMIT_STALL
            )
            self._give_up_commit()
        if not force and now - self._last_commit < COMMIT_INTERVAL:
            return False
        self._last_commit = now
        found = [(offsets, offsets.committable()) for offsets in self.offsets.values()]
        moved = [(offsets, offset) for offsets, offset in found if offset is not None]
        if not moved:
            return False
        for offsets, offset in moved:
            offsets.requested(offset)
        self._in_flight, self._in_flight_since = moved, now
        try:
            self.consumer.commit(
                offsets=[TopicPartition(o.topic, o.partition, offset) for o, offset in moved],
                asynchronous=True,
            )
        except KafkaException as exc:  # tried again at the next commit
            logger.warning("Could not commit offsets of %r: %s", self.topic, exc)
            self._give_up_commit()
            return False
        return True

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition] | None) -> None:
        """librdkafka's answer to a commit (on the consumer's thread, inside a poll)."""
        if error is not None:
            logger.warning("Kafka did not commit offsets of %r: %s", self.topic, error)
        answered = {
            (tp.partition, tp.offset): error is None and tp.error is None
            for tp in partitions or ()
            if tp.topic == self.topic
        }
        in_flight = self._in_flight
        if in_flight is None or (answered and answered.keys() != {(o.partition, n) for o, n in in_flight}):
            # The late answer of a commit given up on (COMMIT_STALL): what it stored, it stored
            for (partition, offset), stored in answered.items():
                offsets = self.offsets.get(partition)
                if stored and offsets is not None:
                    offsets.committed(offset)
            return
        self._in_flight = None
        for offsets, offset in in_flight:
            if answered.get((offsets.partition, offset), False):
                offsets.committed(offset)
            else:
                offsets.commit_failed(offset)

    def _give_up_commit(self) -> None:
        """Forget the commit in flight (refused by librdkafka, or unanswered for COMMIT_STALL s): its
        offsets are offered again by the next commit."""
        in_flight, self._in_flight = self._in_flight, None
        for offsets, offset in in_flight or ():
            offsets.commit_failed(offset)

    def flush_commits(self, timeout: float) -> bool:
        """Commit what is done and wait up to ``timeout`` s for Kafka's answers, polling the consumer.

        Records fetched meanwhile are buffered as in ``__next__`` (handed out later, never skipped).
        True when everything done is committed; False when Kafka did not answer in time (the
        offsets not committed are read again by the partition's next owner: duplicates).
        """
        deadline = time.monotonic() + timeout
        while True:
            waiting = self._in_flight is not None or self.commit(force=True)
            if not waiting and all(o.committable() is None for o in self.offsets.values()):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                records = self.consumer.consume(
                    num_messages=FETCH_BATCH, timeout=min(remaining, POLL_INTERVAL)
                )
            except KafkaException as exc:
                raise ConnectionClosed(exc) from None
            for record in records:
                self._receive(record)

    def outstanding(self) -> int:
        """Messages handed out to Dramatiq and not done, on the partitions still assigned."""
        return sum(offsets.pending for offsets in self.offsets.values()) - len(self.buffer)

    def _flow(self) -> None:
        """Pause every partition once the local buffer is full; resume them once it is half empty.

        The buffer holds messages fetched and not handed out yet; Dramatiq gets at most
        ``prefetch`` messages not done (see ``__next__``). Pausing at a full buffer and resuming at
        half of it keeps a resume (a new fetch from the partition) from following every ack.
        """
        assigned = set(self.offsets)
        if len(self.buffer) >= self.buffer_size:
            to_pause = assigned - self.paused
            if to_pause:
                self.consumer.pause([TopicPartition(self.topic, p) for p in to_pause])
                self.paused |= to_pause
        elif self.paused and len(self.buffer) <= self.buffer_size // 2:
            self.consumer.resume([TopicPartition(self.topic, p) for p in self.paused])
            self.paused.clear()

    def _hand_out(self) -> KafkaMessage | None:
        if self.buffer and self.outstanding() < self.prefetch:
            return self.buffer.popleft()
        return None

    # --- Dramatiq's Consumer interface ------------------------------------------------------------

    def __next__(self) -> KafkaMessage | None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.commit()
                message = self._hand_out()
                if message is not None:
                    return message
                self._flow()
                wait = max(0.0, min(POLL_INTERVAL, deadline - time.monotonic()))
                # What librdkafka holds already, without waiting (consume() waits its whole timeout
                # unless it has the whole batch); with nothing, wait for one message, or for an ack
                # when messages wait in the buffer for room
                records = self.consumer.consume(num_messages=FETCH_BATCH, timeout=0)
                if not records and self.buffer:
                    self._acked.wait(wait)
                    self._acked.clear()
                elif not records:
                    records = self.consumer.consume(num_messages=1, timeout=wait)
                    if records:
                        records += self.consumer.consume(num_messages=FETCH_BATCH, timeout=0)
            except KafkaException as exc:
                raise ConnectionClosed(exc) from None
            for record in records:
                self._receive(record)
            message = self._hand_out()
            if message is not None:
                return message
            if time.monotonic() >= deadline:
                return None

    def _receive(self, record: Any) -> None:
        error = record.error()
        if error is not None:
            if error.fatal():
                raise ConnectionClosed(KafkaException(error))
            logger.warning("Kafka consumer of %r: %s", self.topic, error)
            return
        offsets = self.offsets.get(record.partition())
        if offsets is None:  # a record of a partition no longer ours: its next owner reads it
            return
        offsets.add(record.offset())
        value: bytes = record.value() or b""
        try:
            message = dramatiq.Message.decode(value)
        except DecodeError as exc:
            # PublishFailed passes through: not done, read again once the consumer restarts
            self._dead_letter(value, record.key(), reason="undecodable")
            offsets.done(record.offset())
            logger.error(
                "A body of %d bytes on the Kafka topic %r is not a message (%s): dead-lettered.",
                len(value),
                self.topic,
                getattr(exc, "error", exc),
            )
            return
        self.buffer.append(
            KafkaMessage(message, offsets=offsets, offset=record.offset(), value=value, key=record.key())
        )

    def _dead_letter(self, value: bytes, key: bytes | None, *, reason: str) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("dramatiq-dead-lettered", reason.encode()),
            ("dramatiq-source-topic", self.topic.encode()),
        ]
        self.broker.produce(self.broker.dead_letter_topic(self.queue_name), value, key=key, headers=headers)

    def ack(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, KafkaMessage)
        message._offsets.done(message._offset)
        self._acked.set()

    def nack(self, message: dramatiq.MessageProxy) -> None:
        """Produce the message's bytes to ``<queue>.DLQ`` (acks=all), wait, then mark it done."""
        assert isinstance(message, KafkaMessage)
        # PublishFailed (a BrokerConnectionError) passes through: Dramatiq tries the nack again later
        self._dead_letter(message._value, message._key, reason="rejected")
        message._offsets.done(message._offset)
        self._acked.set()

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        """Nothing to send: what is not done stays uncommitted, and the partition's next owner reads it."""

    def close(self) -> None:
        """Commit what is done and leave the group, within about CLOSE_TIMEOUT s (then in the background)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + CLOSE_TIMEOUT
        try:
            if self.offsets:
                with contextlib.suppress(KafkaException, RuntimeError):
                    self.consumer.pause([TopicPartition(self.topic, p) for p in self.offsets])
            if not self.flush_commits(CLOSE_TIMEOUT):
                logger.warning(
                    "Kafka did not answer the last commit of %r within %g s: the messages done since the "
                    "last commit will be consumed again (duplicates, not losses).",
                    self.topic,
                    CLOSE_TIMEOUT,
                )
        except ConnectionClosed as exc:
            logger.warning("Could not commit the offsets of %r before closing: %s", self.topic, exc)
        finally:
            self.buffer.clear()
            self._leave(max(CLOSE_LEAVE_MIN, deadline - time.monotonic()))

    def _leave(self, timeout: float) -> None:
        """Close the confluent-kafka consumer (leave the group), waiting at most ``timeout`` s.

        librdkafka's close waits for every commit still pending, without a bound of ours (a commit
        waiting for a coordinator, up to ``session.timeout.ms``): past ``timeout`` it goes on in a
        daemon thread, so that a worker's shutdown is not held up.
        """
        closer = threading.Thread(target=self._close_consumer, name=f"kafka-close-{self.topic}", daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            logger.warning(
                "The Kafka consumer of %r did not leave its group within %g s: it goes on closing in the "
                "background (its partitions move to other consumers once Kafka's session timeout passes).",
                self.topic,
                timeout,
            )

    def _close_consumer(self) -> None:
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:  # already closed, or the broker is gone
            logger.debug("Closing the Kafka consumer of %r: %s", self.topic, exc)
