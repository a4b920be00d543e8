"""A Dramatiq broker on Google Cloud Pub/Sub, at least once (``pip install "django-messenger[pubsub]"``).

:class:`PubSubBroker` is a plain ``dramatiq.Broker``: any Dramatiq program can use it, with or
without Django (``PUBLISH_TIMEOUT`` is read from ``MESSENGER`` only when Django's settings are
configured and the broker has no ``publish_timeout`` of its own). See docs/transports.md,
"Google Pub/Sub", for the design and what the emulator could and could not show.

The layout, per Dramatiq queue ``q`` (``<namespace>.q`` with a namespace), made on first use:

* topic and subscription ``q``: the messages. The subscription has the broker's ack deadline,
  an exponential :class:`RetryPolicy` (``min_backoff`` to ``max_backoff``) and a
  :class:`DeadLetterPolicy` to ``q.XQ`` after ``max_deliveries`` deliveries that were never
  acknowledged (a message that kills its worker every time);
* topic and subscription ``q.DQ``: delayed messages, their due time in the message's ``eta``
  option (Dramatiq's own): Dramatiq's worker holds each one until it is due, then enqueues it
  on ``q`` and acknowledges the delayed copy, as it does on RabbitMQ;
* topic and subscription ``q.XQ``: the dead letters, kept there (a topic without a
  subscription would drop them).

What it does:

* **A send waits for the server's message id** (one ``Publish`` call, retried on transient
  errors within ``PUBLISH_TIMEOUT``): an error or no answer in time raises, which messenger's
  ``publish`` turns into ``BrokerUnavailable`` (a 503). A client that could not reach Pub/Sub is
  replaced, and the channels reconnect within a second (:data:`CHANNEL_OPTIONS`), so that the
  first send after an outage does not wait for gRPC's reconnection backoff.
* **Synchronous pull, bounded by the prefetch**: a consumer pulls at most ``prefetch`` minus
  the messages its worker holds (flow control), and waits up to the worker's timeout.
* **Ack deadlines extended while a message is held**: one lease thread per broker extends every
  message pulled and not yet acknowledged (running, waiting in the prefetch, or a delayed one
  held until due) by ``ack_deadline``, when its deadline comes near (checked every
  :data:`LEASE_INTERVAL` seconds), for at most ``max_lease`` seconds (a delayed message: past its
  due time). A worker that dies stops extending: its messages are delivered again once their
  deadline runs out. Every call a worker makes is bounded by :data:`WORKER_CALL_TIMEOUT`, with no
  hidden retry: an outage fails it (Dramatiq's ``ConnectionClosed``) instead of hanging it.
* **Retries are Dramatiq's** (its ``Retries`` middleware re-enqueues a failed message with its
  backoff, through ``q.DQ``), so that ``max_retries``, ``throws`` and the backoff stay per actor;
  when they are exhausted Dramatiq nacks the message, and the nack publishes it to ``q.XQ``
  (waiting for the id) before acknowledging it: the failure is seen once, by the worker.
  Pub/Sub's own redelivery (retry policy, dead-letter policy) serves what no worker could
  report: an expired deadline, a message given back.
* **Ordering keys** on request: ``message_ordering=True`` makes the subscriptions ordered, and a
  message's ``ordering_key`` option (``actor.send_with_options(..., ordering_key="order-42")``)
  is published as its key.
* **Subscriptions never expire** (an expiration policy without a TTL) and ``q.XQ`` keeps its
  messages 31 days, Pub/Sub's longest retention. With ``create=False`` a process checks once that
  the three subscriptions exist before its first send to a queue.
* **Bodies that are not messages** are published to ``q.XQ`` as they are, and acknowledged.
  Nothing read from the wire is imported or called by name: bodies are decoded by Dramatiq's
  encoder, and an actor is looked up among the declared ones.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import dramatiq
import grpc
from django.conf import settings as django_settings
from dramatiq.common import current_millis, dq_name, xq_name
from dramatiq.errors import ConnectionClosed, DecodeError, QueueJoinTimeout, QueueNotFound
from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2, timestamp_pb2
from google.pubsub_v1.services.publisher import client as gapic_publisher
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport
from google.pubsub_v1.types import DeadLetterPolicy, ExpirationPolicy, RetryPolicy

from ..conf import messenger_settings
from ..exceptions import MessageTooLarge

__all__ = [
    "DEAD_LETTER_RETENTION",
    "DEFAULT_MAX_LEASE",
    "DEFAULT_PUBLISH_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "MessageTooLargeForPubSub",
    "PubSubBroker",
    "PubSubConsumer",
    "PubSubMessage",
    "resource_id",
]

logger = logging.getLogger("django_messenger")

#: A send's bound without Django (or a ``MESSENGER`` setting): messenger's own default.
DEFAULT_PUBLISH_TIMEOUT = 5.0
#: Pub/Sub's largest message (data plus attributes): 10 MB.
MAX_MESSAGE_BYTES = 10_000_000
#: Seconds between two looks at the held messages' deadlines: a third of Pub/Sub's shortest ack
#: deadline (10 s), so that a subscription made with any deadline is extended in time.
LEASE_INTERVAL = 10 / 3
#: Pub/Sub's shortest ack deadline: what a pulled message's deadline is taken to be until the broker
#: first extends it (a subscription made elsewhere may have any deadline from 10 s).
SHORTEST_ACK_DEADLINE = 10
#: Seconds a held message is extended at most (``max_lease``'s default; google-cloud-pubsub's own
#: ``max_lease_duration``): past it, Pub/Sub delivers the message again once its deadline runs out,
#: so that nothing is held for ever by a live process (a stuck handler, a lost acknowledgement).
DEFAULT_MAX_LEASE = 3600.0
#: Seconds ``q.XQ`` keeps its messages: 31 days, Pub/Sub's longest retention (its default is 7 days).
DEAD_LETTER_RETENTION = 31 * 24 * 3600
#: Ack ids in one ``ModifyAckDeadline`` or ``Acknowledge`` request (Pub/Sub takes a 512 kB request).
ACK_BATCH = 500
#: Seconds an administrative or acknowledging call may take in a worker, all of it: these calls are
#: made with ``retry=None`` (the library's default retry would go on for 60 s, then raise
#: ``RetryError``), Dramatiq or the lease thread trying again.
WORKER_CALL_TIMEOUT = 10.0
#: A topic or subscription id, as Pub/Sub takes it.
_RESOURCE_ID = re.compile(r"[A-Za-z][-A-Za-z0-9._~%+]{2,254}")
#: A Google Cloud project id, legacy domain-scoped ones (``example.com:my-project``) included.
PROJECT_ID = re.compile(r"(?:[a-z0-9][-a-z0-9.]*\.[a-z]{2,63}:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
#: Errors worth trying again within a send's deadline.
_TRANSIENT = (
    google_exceptions.ServiceUnavailable,
    google_exceptions.InternalServerError,
    google_exceptions.Aborted,
    google_exceptions.Unknown,
)


#: Errors of a call that say Pub/Sub was not reached, or did not answer in time: worth trying again
#: later (Dramatiq's ``ConnectionClosed`` in a worker). Other errors are answers (a missing topic, a
#: permission, a request refused): trying the same call again would get the same answer.
_OUTAGE = (
    *_TRANSIENT,
    google_exceptions.DeadlineExceeded,
    google_exceptions.RetryError,
    google_exceptions.ResourceExhausted,
    google_exceptions.Cancelled,
)

#: Errors after which a publisher's channel may be stuck (silent, reset, reconnecting with backoff):
#: the client is replaced. Other errors (a deleted topic, a permission) leave it to the other sends.
_UNREACHABLE = (
    google_exceptions.DeadlineExceeded,
    google_exceptions.ServiceUnavailable,
    google_exceptions.RetryError,
)


#: gRPC options of the broker's channels. A channel keeps its connections to itself (gRPC shares
#: them process-wide by default, so a new client would inherit a failed connection and its
#: reconnection backoff, up to 2 minutes) and reconnects within a second once the server is back.
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
#: What google-cloud-pubsub's own channels are made with, for the emulator's channel.
_LIBRARY_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class _PublisherTransport(PublisherGrpcTransport):
    """The library's transport, its channel made with :data:`CHANNEL_OPTIONS` too."""

    @classmethod
    def create_channel(cls, *args: Any, **kwargs: Any) -> grpc.Channel:
        kwargs["options"] = [*kwargs.get("options", ()), *CHANNEL_OPTIONS]
        return super().create_channel(*args, **kwargs)


class _SubscriberTransport(SubscriberGrpcTransport):
    """The library's transport, its channel made with :data:`CHANNEL_OPTIONS` too."""

    @classmethod
    def create_channel(cls, *args: Any, **kwargs: Any) -> grpc.Channel:
        kwargs["options"] = [*kwargs.get("options", ()), *CHANNEL_OPTIONS]
        return super().create_channel(*args, **kwargs)


def resource_id(namespace: str | None, queue_name: str) -> str:
    """The topic and subscription id of ``queue_name`` (Dramatiq's, ``.DQ`` and ``.XQ`` included).

    Raises:
      ValueError: Pub/Sub would refuse the id (it must start with a letter, be 3 to 255
        characters of letters, digits and ``-._~%+``, and not start with ``goog``).
    """
    name = f"{namespace}.{queue_name}" if namespace else queue_name
    if not _RESOURCE_ID.fullmatch(name) or name.lower().startswith("goog"):
        raise ValueError(
            f"{name!r} cannot name a Pub/Sub topic: it must start with a letter, be 3 to 255 characters "
            "of letters, digits and -._~%+, and not start with 'goog'."
        )
    return name


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int(round((seconds - whole) * 1e9)))


class MessageTooLargeForPubSub(MessageTooLarge):
    """A Dramatiq message larger than Pub/Sub takes (:data:`MAX_MESSAGE_BYTES`): a 413, never a 503."""

    def __init__(self, limit: int, size: int) -> None:
        super().__init__(limit, size)
        self.reason = f"The message is {size} bytes, larger than Pub/Sub takes ({limit} bytes)."


class PubSubMessage(dramatiq.MessageProxy):
    """A Dramatiq message pulled from a subscription, with the ack id that acknowledges it."""

    def __init__(self, message: dramatiq.Message[Any], *, ack_id: str, delivery_attempt: int) -> None:
        super().__init__(message)
        self._ack_id = ack_id
        #: Pub/Sub's count of this message's deliveries (0 when the subscription has no dead-letter policy).
        self._delivery_attempt = delivery_attempt
        #: Set once a nack's dead-letter publish succeeded: a nack tried again only acknowledges.
        self._dead_lettered = False


class _Lease:
    """One held message: when its deadline runs out (as far as this process knows), and until when
    it may be extended."""

    __slots__ = ("expires", "until")

    def __init__(self, expires: float, until: float) -> None:
        self.expires = expires
        self.until = until


class _Leases:
    """The ack ids pulled and not yet settled, by subscription, extended by one thread.

    A message is extended when its deadline is near (within :meth:`margin`), never past its
    ``until`` (``max_lease`` after it was pulled, or after its due time for a delayed one).
    """

    def __init__(self, broker: PubSubBroker) -> None:
        self.broker = broker
        self._held: dict[str, dict[str, _Lease]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, subscription: str, ack_ids: Iterable[str]) -> None:
        now = time.monotonic()
        with self._lock:
            held = self._held.setdefault(subscription, {})
            for ack_id in ack_ids:
                held[ack_id] = _Lease(now + SHORTEST_ACK_DEADLINE, now + self.broker.max_lease)
            if self._thread is None or not self._thread.is_alive():
                self._wake.clear()
                self._thread = threading.Thread(target=self._run, name="pubsub-leases", daemon=True)
                self._thread.start()

    def hold_longer(self, subscription: str, ack_id: str, seconds: float) -> None:
        """Let ``ack_id`` be extended ``seconds`` longer (a delayed message, held until due)."""
        with self._lock:
            lease = self._held.get(subscription, {}).get(ack_id)
            if lease is not None and seconds > 0:
                lease.until += seconds

    def release(self, subscription: str, ack_ids: Iterable[str]) -> None:
        with self._lock:
            held = self._held.get(subscription, {})
            for ack_id in ack_ids:
                held.pop(ack_id, None)

    def take_all(self, subscription: str) -> list[str]:
        """Stop extending every message held on ``subscription``; return their ack ids."""
        with self._lock:
            return list(self._held.pop(subscription, ()))

    def count(self, subscription: str) -> int:
        with self._lock:
            return len(self._held.get(subscription, ()))

    def snapshot(self) -> dict[str, list[str]]:
        with self._lock:
            return {subscription: list(held) for subscription, held in self._held.items() if held}

    def stop(self) -> None:
        self._wake.set()

    def margin(self) -> float:
        """Seconds before its deadline that a message is extended: two looks and a second, or half
        the ack deadline when that is longer (a call that fails is tried again before it runs out)."""
        return max(2 * LEASE_INTERVAL + 1.0, self.broker.ack_deadline / 2)

    def _run(self) -> None:
        while not self._wake.wait(LEASE_INTERVAL):
            try:
                self.extend()
            except Exception:  # the thread must outlive anything: a dead one extends nothing
                logger.exception("Extending the Pub/Sub leases failed.")

    def _due(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """The ack ids to extend now, and those held past their ``until`` (no longer held)."""
        now = time.monotonic()
        soon = now + self.margin()
        due: dict[str, list[str]] = {}
        overdue: dict[str, list[str]] = {}
        with self._lock:
            for subscription, held in self._held.items():
                for ack_id, lease in list(held.items()):
                    if lease.until <= now:
                        del held[ack_id]
                        overdue.setdefault(subscription, []).append(ack_id)
                    elif lease.expires <= soon:
                        due.setdefault(subscription, []).append(ack_id)
        return due, overdue

    def _extended(self, subscription: str, ack_ids: list[str], expires: float) -> None:
        with self._lock:
            held = self._held.get(subscription, {})
            for ack_id in ack_ids:
                lease = held.get(ack_id)
                if lease is not None:
                    lease.expires = expires

    def extend(self) -> None:
        """Push back by the broker's ``ack_deadline`` the deadline of every held message near it."""
        due, overdue = self._due()
        for subscription, ack_ids in overdue.items():
            logger.warning(
                "%d message(s) of the Pub/Sub subscription %r were held longer than max_lease (%g s): "
                "no longer extended, Pub/Sub delivers them again once their deadline runs out.",
                len(ack_ids),
                subscription,
                self.broker.max_lease,
            )
        for subscription, ack_ids in due.items():
            for start in range(0, len(ack_ids), ACK_BATCH):
                batch = ack_ids[start : start + ACK_BATCH]
                sent = time.monotonic()
                try:
                    self.broker.subscriber.modify_ack_deadline(
                        request={
                            "subscription": subscription,
                            "ack_ids": batch,
                            "ack_deadline_seconds": self.broker.ack_deadline,
                        },
                        timeout=WORKER_CALL_TIMEOUT,
                        retry=None,
                    )
                except google_exceptions.GoogleAPIError as exc:
                    # Tried again at the next look; a message whose deadline ran out meanwhile
                    # is delivered again (at least once).
                    logger.warning("Extending %d Pub/Sub lease(s) failed: %s", len(batch), exc)
                    continue
                self._extended(subscription, batch, sent + self.broker.ack_deadline)


class PubSubBroker(dramatiq.Broker):
    """A Dramatiq broker on Google Cloud Pub/Sub (see the module's doc).

    Parameters:
      project_id: the Google Cloud project of the topics and subscriptions (required).
      namespace: a prefix of every topic and subscription id (``<namespace>.<queue>``).
      ack_deadline: seconds a pulled message stays leased between two extensions (10 to 600);
        also the deadline of the subscriptions the broker creates.
      max_deliveries: deliveries of a message never acknowledged before Pub/Sub moves it to the
        dead letters (5 to 100, the dead-letter policy's range). 10 by default: the messages
        prefetched beside one that kills its worker count deliveries too (docs/transports.md).
      min_backoff, max_backoff: the retry policy's bounds, in seconds (0 to 600): how long Pub/Sub
        waits before it delivers again a message whose deadline ran out or that was given back.
      message_ordering: subscriptions deliver the messages of one ``ordering_key`` in order.
      publish_timeout: seconds a send may wait for the server's message id; by default
        ``MESSENGER["PUBLISH_TIMEOUT"]`` (with Django) or :data:`DEFAULT_PUBLISH_TIMEOUT`.
      max_lease: seconds a held message is extended at most (:data:`DEFAULT_MAX_LEASE`); a delayed
        message is extended that long past its due time. Longer than any handler's time limit.
      create: make missing topics and subscriptions (True); False uses them as they are, after a
        check, once per queue, that the subscriptions exist (a send fails otherwise). Permission
        to create denied is taken as "they exist" (logged once): the publish then tells.
      client_options, credentials: passed to google-cloud-pubsub's clients (with the emulator,
        ``PUBSUB_EMULATOR_HOST`` in the environment is enough).
    """

    def __init__(
        self,
        *,
        project_id: str | None = None,
        namespace: str | None = None,
        ack_deadline: int = 60,
        max_deliveries: int = 10,
        min_backoff: float = 10.0,
        max_backoff: float = 600.0,
        message_ordering: bool = False,
        publish_timeout: float | None = None,
        max_lease: float = DEFAULT_MAX_LEASE,
        create: bool = True,
        client_options: Any = None,
        credentials: Any = None,
        middleware: list[dramatiq.Middleware] | None = None,
    ) -> None:
        if not 10 <= ack_deadline <= 600:
            raise ValueError("'ack_deadline' must be between 10 and 600 seconds (Pub/Sub's range).")
        if not 5 <= max_deliveries <= 100:
            raise ValueError("'max_deliveries' must be between 5 and 100 (Pub/Sub's dead-letter policy).")
        if not 0 <= min_backoff <= max_backoff <= 600:
            raise ValueError("'min_backoff' and 'max_backoff' must be 0 <= min <= max <= 600 seconds.")
        if publish_timeout is not None and not publish_timeout > 0:
            raise ValueError("'publish_timeout' must be a number of seconds greater than 0.")
        if not max_lease > 0:
            raise ValueError("'max_lease' must be a number of seconds greater than 0.")
        super().__init__(middleware=middleware)
        self.project_id = project_id
        self.namespace = namespace
        self.ack_deadline = int(ack_deadline)
        self.max_deliveries = int(max_deliveries)
        self.min_backoff = float(min_backoff)
        self.max_backoff = float(max_backoff)
        self.message_ordering = bool(message_ordering)
        self.publish_timeout_option = publish_timeout
        self.max_lease = float(max_lease)
        self.create = create
        self.client_kwargs: dict[str, Any] = {}
        if client_options is not None:
            self.client_kwargs["client_options"] = client_options
        if credentials is not None:
            self.client_kwargs["credentials"] = credentials
        self.queues: set[str] = set()
        self.leases = _Leases(self)
        self._clients_lock = threading.Lock()
        self._publisher: Any = None
        self._subscriber: Any = None
        self._made: set[str] = set()
        self._made_lock = threading.Lock()
        self._warned_create = False
        self._warned_check = False

    # --- settings and clients -----------------------------------------------------------------

    @property
    def publish_timeout(self) -> float:
        """Seconds a send may wait: the option, else ``MESSENGER["PUBLISH_TIMEOUT"]``, else 5."""
        if self.publish_timeout_option is not None:
            return float(self.publish_timeout_option)
        if django_settings.configured:  # a Django project: messenger's setting applies
            return float(messenger_settings.PUBLISH_TIMEOUT)
        return DEFAULT_PUBLISH_TIMEOUT

    @property
    def project(self) -> str:
        if not self.project_id or not PROJECT_ID.fullmatch(self.project_id):
            raise ValueError(
                f"The Pub/Sub broker's project_id is {self.project_id!r}: give it the Google Cloud project "
                "of its topics (6 to 30 lowercase letters, digits and hyphens, or a legacy "
                "domain-scoped id such as 'example.com:my-project')."
            )
        return self.project_id

    def _client(self, client_class: Any, transport_class: Any) -> Any:
        """A client whose channel has :data:`CHANNEL_OPTIONS` (the emulator's too)."""
        emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
        if emulator:  # what the library does for the emulator, with the options
            channel = grpc.insecure_channel(emulator, options=[*_LIBRARY_OPTIONS, *CHANNEL_OPTIONS])
            options = {key: value for key, value in self.client_kwargs.items() if key != "credentials"}
            return client_class(transport=transport_class(host=emulator, channel=channel), **options)
        return client_class(transport=transport_class, **self.client_kwargs)

    @property
    def publisher(self) -> Any:
        """The process's publisher client (thread-safe), made on first use."""
        with self._clients_lock:
            if self._publisher is None:
                self._publisher = self._client(pubsub_v1.PublisherClient, _PublisherTransport)
            return self._publisher

    @property
    def subscriber(self) -> Any:
        """The process's subscriber client (thread-safe), made on first use."""
        with self._clients_lock:
            if self._subscriber is None:
                self._subscriber = self._client(pubsub_v1.SubscriberClient, _SubscriberTransport)
            return self._subscriber

    def _discard_publisher(self, client: Any) -> None:
        """Forget a publisher that could not reach Pub/Sub: the next send gets a fresh channel.

        Not closed here: other threads' calls on it end by their own deadlines, and its channel
        closes when the last of them lets it go.
        """
        with self._clients_lock:
            if self._publisher is client:
                self._publisher = None

    def topic_path(self, queue_name: str) -> str:
        return f"projects/{self.project}/topics/{resource_id(self.namespace, queue_name)}"

    def subscription_path(self, queue_name: str) -> str:
        return f"projects/{self.project}/subscriptions/{resource_id(self.namespace, queue_name)}"

    # --- queues -------------------------------------------------------------------------------

    def declare_queue(self, queue_name: str) -> None:
        """Declare ``queue_name`` and its delay queue (no network: topics are made on first use)."""
        if queue_name in self.queues:
            return
        for name in (queue_name, xq_name(queue_name)):  # a name Pub/Sub refuses fails here
            resource_id(self.namespace, name)
        self.emit_before("declare_queue", queue_name)
        self.queues.add(queue_name)
        self.emit_after("declare_queue", queue_name)
        delayed = dq_name(queue_name)
        self.delay_queues.add(delayed)
        self.emit_after("declare_delay_queue", delayed)

    def get_declared_queues(self) -> set[str]:
        return set(self.queues)

    def get_declared_delay_queues(self) -> set[str]:
        return set(self.delay_queues)

    def ensure(self, queue_name: str, *, timeout: float | None = None) -> None:
        """Make ``queue_name``'s topics and subscriptions (``q``, ``q.DQ``, ``q.XQ``) when missing.

        Once per process and queue. All the calls together are bounded by ``timeout`` (the
        publish timeout by default): a send that makes them still answers within its bound.
        Each subscription is made right after its topic, the dead letters' first, so that no
        message is published before a subscription exists to keep it. With ``create=False``,
        checks that the three subscriptions exist instead (``NotFound`` if one is missing).
        """
        canonical = queue_name.removesuffix(".DQ").removesuffix(".XQ")
        if canonical in self._made:
            return
        if canonical not in self.queues:
            raise QueueNotFound(canonical)
        deadline = time.monotonic() + (self.publish_timeout if timeout is None else timeout)
        dead_letters = xq_name(canonical)
        if not self.create:
            self._check(canonical, deadline)
            with self._made_lock:
                self._made.add(canonical)
            return
        retry_policy = RetryPolicy(
            minimum_backoff=_duration(self.min_backoff), maximum_backoff=_duration(self.max_backoff)
        )
        # Without one, a subscription expires after 31 days without a pull: q.XQ's (never pulled)
        # with its dead letters, or an idle queue's, and what is published after goes nowhere
        never_expires = ExpirationPolicy()
        self._make(
            dead_letters,
            {
                "expiration_policy": never_expires,
                "message_retention_duration": _duration(DEAD_LETTER_RETENTION),
            },
            deadline,
        )
        self._make(
            dq_name(canonical),
            {
                "ack_deadline_seconds": self.ack_deadline,
                "retry_policy": retry_policy,
                "expiration_policy": never_expires,
            },
            deadline,
        )
        self._make(
            canonical,
            {
                "ack_deadline_seconds": self.ack_deadline,
                "retry_policy": retry_policy,
                "dead_letter_policy": DeadLetterPolicy(
                    dead_letter_topic=self.topic_path(dead_letters), max_delivery_attempts=self.max_deliveries
                ),
                "enable_message_ordering": self.message_ordering,
                "expiration_policy": never_expires,
            },
            deadline,
        )
        with self._made_lock:
            self._made.add(canonical)

    def forget(self, queue_name: str) -> None:
        """Forget that ``queue_name``'s topics and subscriptions were made: the next use makes them."""
        with self._made_lock:
            self._made.discard(queue_name.removesuffix(".DQ").removesuffix(".XQ"))

    @staticmethod
    def _left(deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise google_exceptions.DeadlineExceeded("Pub/Sub did not answer within the call's bound.")
        return left

    def _make(self, queue_name: str, options: dict[str, Any], deadline: float) -> None:
        topic = self.topic_path(queue_name)
        try:
            self.publisher.create_topic(request={"name": topic}, timeout=self._left(deadline), retry=None)
            logger.info("Created the Pub/Sub topic %r.", topic)
        except google_exceptions.AlreadyExists:
            pass
        except google_exceptions.PermissionDenied:
            self._cannot_create(topic)
        subscription = self.subscription_path(queue_name)
        try:
            try:
                self.subscriber.create_subscription(
                    request={"name": subscription, "topic": topic, **options},
                    timeout=self._left(deadline),
                    retry=None,
                )
            except google_exceptions.InvalidArgument:
                if "message_retention_duration" not in options:
                    raise
                # A Pub/Sub whose bound is still 7 days (Google's emulator): its default, logged
                options = {key: val for key, val in options.items() if key != "message_retention_duration"}
                self.subscriber.create_subscription(
                    request={"name": subscription, "topic": topic, **options},
                    timeout=self._left(deadline),
                    retry=None,
                )
                logger.warning(
                    "Pub/Sub refused a retention of %d days for %r: made with its default (7 days).",
                    DEAD_LETTER_RETENTION // 86400,
                    subscription,
                )
            logger.info("Created the Pub/Sub subscription %r.", subscription)
        except google_exceptions.AlreadyExists:
            pass
        except google_exceptions.PermissionDenied:
            self._cannot_create(subscription)

    def _cannot_create(self, name: str) -> None:
        """An account that may publish but not create (a web process's, least privilege): the
        topics and subscriptions are taken to exist; a send to a missing topic still fails."""
        if not self._warned_create:
            self._warned_create = True
            logger.warning(
                "The Pub/Sub broker may not create %r (permission denied): it takes the queues' topics "
                "and subscriptions to exist. Give this process create=False (docs/transports.md).",
                name,
            )

    def _check(self, canonical: str, deadline: float) -> None:
        """``create=False``: each of the queue's subscriptions exists, or ``NotFound`` (logged)."""
        for name in (xq_name(canonical), dq_name(canonical), canonical):
            subscription = self.subscription_path(name)
            try:
                self.subscriber.get_subscription(
                    request={"subscription": subscription}, timeout=self._left(deadline), retry=None
                )
            except google_exceptions.NotFound:
                logger.error(
                    "The Pub/Sub subscription %r does not exist, and the broker has create=False: what "
                    "is published to %r would be lost, so the send fails. Make it (docs/transports.md, "
                    "Google Pub/Sub), or let a process with create=True make it.",
                    subscription,
                    self.topic_path(name),
                )
                raise
            except google_exceptions.PermissionDenied:
                if not self._warned_check:
                    self._warned_check = True
                    logger.warning(
                        "The Pub/Sub broker may not read %r (permission denied, pubsub.subscriptions.get): "
                        "it cannot check that the queues' subscriptions exist, and takes them to exist.",
                        subscription,
                    )
                return

    # --- sending ------------------------------------------------------------------------------

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Publish ``message`` (to ``q.DQ`` with an ``eta`` when delayed) and wait for its id."""
        canonical = message.queue_name
        if canonical not in self.queues:
            raise QueueNotFound(canonical)
        if delay:
            message = message.copy(queue_name=dq_name(canonical), options={"eta": current_millis() + delay})
        self.emit_before("enqueue", message, delay)
        data = message.encode()
        if len(data) > MAX_MESSAGE_BYTES:
            raise MessageTooLargeForPubSub(MAX_MESSAGE_BYTES, len(data))
        key = message.options.get("ordering_key") if self.message_ordering else None
        self.publish_data(message.queue_name, data, ordering_key=str(key) if key else "")
        self.emit_after("enqueue", message, delay)
        return message

    def publish_data(
        self, queue_name: str, data: bytes, *, ordering_key: str = "", timeout: float | None = None
    ) -> str:
        """Publish ``data`` to ``queue_name``'s topic; return the server's message id.

        One ``Publish`` call, tried again on transient errors, all within ``timeout`` (the
        publish timeout by default): each attempt is bounded by what is left, and so is each
        pause between two. Raises what the client raised when it fails.
        """
        timeout = self.publish_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        client = self.publisher
        pubsub_message: dict[str, Any] = {"data": data}
        if ordering_key:
            pubsub_message["ordering_key"] = ordering_key
        pause = 0.05
        try:
            self.ensure(queue_name, timeout=self._left(deadline))
            request = {"topic": self.topic_path(queue_name), "messages": [pubsub_message]}
            while True:
                try:
                    # The generated client's Publish (one call, its answer the ids), not the batching
                    # publisher's, whose future would outlive the deadline and send later. No retry
                    # of api-core's: it gives an attempt the whole timeout again when less than a
                    # second is left, so a send could wait twice its bound
                    response = gapic_publisher.PublisherClient.publish(
                        client, request=request, timeout=self._left(deadline), retry=None
                    )
                    break
                except _TRANSIENT:
                    left = deadline - time.monotonic()
                    if left <= pause:  # no time for a pause and an attempt: this error is the answer
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
        except google_exceptions.GoogleAPIError as exc:
            if isinstance(exc, _UNREACHABLE):
                self._discard_publisher(client)
            raise
        return str(response.message_ids[0])

    # --- receiving ----------------------------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> PubSubConsumer:
        canonical = queue_name.removesuffix(".DQ")
        if canonical not in self.queues:
            raise QueueNotFound(queue_name)
        return PubSubConsumer(self, queue_name, prefetch=prefetch, timeout=timeout)

    def acknowledge(self, queue_name: str, ack_ids: list[str]) -> None:
        """Acknowledge ``ack_ids`` on ``queue_name``'s subscription and stop extending them.

        They are no longer extended even when the call fails (ConnectionClosed, which Dramatiq
        tries again): a message whose acknowledgement did not reach Pub/Sub is delivered again
        once its deadline runs out (a duplicate, never a loss), and holds no prefetch slot.
        """
        subscription = self.subscription_path(queue_name)
        try:
            self._settle("acknowledge", subscription, ack_ids)
        finally:
            self.leases.release(subscription, ack_ids)

    def give_back(self, queue_name: str, ack_ids: list[str]) -> None:
        """Pub/Sub's nack (a deadline of 0): delivered again after the subscription's retry backoff.

        The messages are no longer extended either way: if the call fails, their deadline runs
        out and Pub/Sub delivers them again all the same (never held for ever by a live worker).
        """
        subscription = self.subscription_path(queue_name)
        self.leases.release(subscription, ack_ids)
        self._settle("modify_ack_deadline", subscription, ack_ids, ack_deadline_seconds=0)

    def _settle(self, method: str, subscription: str, ack_ids: list[str], **extra: Any) -> None:
        """One bounded call per batch. ConnectionClosed when Pub/Sub could not be reached (worth
        trying again); any other answer (an ack id gone stale, a deleted subscription) is logged
        and the messages come back once their deadline runs out."""
        for start in range(0, len(ack_ids), ACK_BATCH):
            request = {"subscription": subscription, "ack_ids": ack_ids[start : start + ACK_BATCH], **extra}
            try:
                getattr(self.subscriber, method)(request=request, timeout=WORKER_CALL_TIMEOUT, retry=None)
            except _OUTAGE as exc:
                raise ConnectionClosed(exc) from None
            except google_exceptions.GoogleAPIError as exc:
                logger.warning(
                    "Pub/Sub refused %s of %d message(s) of %r (%s: %s): they come back once their "
                    "deadline runs out.",
                    method,
                    len(request["ack_ids"]),
                    subscription,
                    type(exc).__name__,
                    exc,
                )

    def dead_letter(self, queue_name: str, data: bytes) -> bool:
        """Publish ``data`` to ``queue_name``'s dead letters, waiting for the id.

        Returns True once published. Raises ConnectionClosed when Pub/Sub could not be reached
        (Dramatiq tries the nack again). A missing topic is made again (once); any other refusal
        is logged and returns False: the caller gives the message back, and the subscription's
        dead-letter policy moves it after ``max_deliveries`` deliveries.
        """
        canonical = queue_name.removesuffix(".DQ")
        dead_letters = xq_name(canonical)
        error: google_exceptions.GoogleAPIError
        for attempt in (1, 2):
            try:
                self.publish_data(dead_letters, data, timeout=WORKER_CALL_TIMEOUT)
                return True
            except _OUTAGE as exc:
                raise ConnectionClosed(exc) from None
            except google_exceptions.NotFound as exc:
                error = exc
                if attempt == 1:  # deleted since this process made it: made again by the next try
                    self.forget(canonical)
                    continue
            except google_exceptions.GoogleAPIError as exc:
                error = exc
            break
        logger.error(
            "Pub/Sub refused a dead letter of the queue %r (%s: %s): the message goes back to its "
            "subscription, whose dead-letter policy moves it to %r after max_deliveries deliveries.",
            queue_name,
            type(error).__name__,
            error,
            self.topic_path(dead_letters),
        )
        return False

    # --- housekeeping -------------------------------------------------------------------------

    def flush(self, queue_name: str) -> None:
        """Drop every message of ``queue_name`` and its delay queue (a seek to now)."""
        self.ensure(queue_name)
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        for name in (queue_name, dq_name(queue_name)):
            self.subscriber.seek(
                request={"subscription": self.subscription_path(name), "time": now},
                timeout=WORKER_CALL_TIMEOUT,
                retry=None,
            )

    def flush_all(self) -> None:
        for queue_name in self.queues:
            self.flush(queue_name)

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Pub/Sub has no count of a subscription's messages (Cloud Monitoring has, minutes late).

        Waits until a pull from ``queue_name`` finds nothing and this process holds none of its
        messages: meant for tests, where the process's own worker consumes the queue. A pulled
        message is given back at once.
        """
        deadline = timeout and time.monotonic() + timeout / 1000
        while True:
            if not self.leases.count(self.subscription_path(queue_name)) and not self._peek(queue_name):
                return
            if deadline and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(0.1)

    def _peek(self, queue_name: str) -> bool:
        for name in (queue_name, dq_name(queue_name)):
            response = self.subscriber.pull(
                request={"subscription": self.subscription_path(name), "max_messages": 1},
                timeout=2.0,
                retry=None,
            )
            ack_ids = [received.ack_id for received in response.received_messages]
            if ack_ids:
                self.give_back(name, ack_ids)
                return True
        return False

    def close(self) -> None:
        self.leases.stop()
        with self._clients_lock:
            for client in (self._publisher, self._subscriber):
                if client is not None:
                    client.transport.close()
            self._publisher = self._subscriber = None


class PubSubConsumer(dramatiq.Consumer):
    """Pulls a queue's subscription up to the prefetch; ack, dead-letter, give back by ack id."""

    def __init__(self, broker: PubSubBroker, queue_name: str, *, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout = max(timeout, 100) / 1000
        self.subscription = broker.subscription_path(queue_name)
        self.buffer: deque[PubSubMessage] = deque()
        self._made = False

    def __iter__(self) -> Iterator[PubSubMessage | None]:  # type: ignore[override]
        return self

    def __next__(self) -> PubSubMessage | None:
        if not self.buffer:
            room = self.prefetch - self.broker.leases.count(self.subscription)
            if room <= 0:  # the worker holds as many as it may: wait for an ack
                time.sleep(min(self.timeout, 0.05))
                return None
            self.pull(min(room, 1000))
        if self.buffer:
            return self.buffer.popleft()
        return None

    def pull(self, max_messages: int) -> None:
        """Pull up to ``max_messages``, waiting up to the worker's timeout for some."""
        started = time.monotonic()
        try:
            if not self._made:
                self.broker.ensure(self.queue_name, timeout=WORKER_CALL_TIMEOUT)
                self._made = True
            # The server answers (empty, if need be) a little before the call's deadline
            response = self.broker.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": max_messages},
                timeout=self.timeout + 1.0,
                retry=None,
            )
        except google_exceptions.DeadlineExceeded:
            return
        except google_exceptions.GoogleAPIError as exc:
            raise ConnectionClosed(exc) from None
        received = list(response.received_messages)
        self.broker.leases.hold(self.subscription, [r.ack_id for r in received])
        for index, item in enumerate(received):
            data = bytes(item.message.data)
            try:
                message = dramatiq.Message.decode(data)
            except DecodeError as exc:
                try:
                    self.dead_letter_undecodable(item.ack_id, data, exc)
                except ConnectionClosed:  # what is left of the pull goes back, not held for ever
                    self.give_back_quietly([r.ack_id for r in received[index:]])
                    raise
                continue
            eta = message.options.get("eta")
            if isinstance(eta, (int, float)):  # held until due: extended that much longer
                until_due = (eta - current_millis()) / 1000
                self.broker.leases.hold_longer(self.subscription, item.ack_id, until_due)
            if item.delivery_attempt and item.delivery_attempt >= self.broker.max_deliveries:
                logger.warning(
                    "The message %s of %r is on its last delivery (%d of %d): should this worker die "
                    "before it is settled, Pub/Sub moves it to the dead letters, and it is not in the "
                    "failure store.",
                    message.message_id,
                    self.queue_name,
                    item.delivery_attempt,
                    self.broker.max_deliveries,
                )
            self.buffer.append(
                PubSubMessage(message, ack_id=item.ack_id, delivery_attempt=item.delivery_attempt)
            )
        if not received:  # a server that answers at once must not make the worker spin
            time.sleep(max(0.0, self.timeout - (time.monotonic() - started)))

    def dead_letter_undecodable(self, ack_id: str, data: bytes, error: DecodeError) -> None:
        if not self.broker.dead_letter(self.queue_name, data):
            self.give_back_quietly([ack_id])
            return
        self.broker.acknowledge(self.queue_name, [ack_id])
        logger.error(
            "A body of %d bytes on the Pub/Sub queue %r is not a message (%s): dead-lettered.",
            len(data),
            self.queue_name,
            getattr(error, "error", error),
        )

    def ack(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, PubSubMessage)
        self.broker.acknowledge(self.queue_name, [message._ack_id])

    def nack(self, message: dramatiq.MessageProxy) -> None:
        """Dramatiq gave up on ``message``: publish it to the dead letters, then acknowledge it.

        A nack tried again (Dramatiq does, on ConnectionClosed) after the publish succeeded only
        acknowledges. If Pub/Sub refuses the dead letter for good, the message is given back.
        """
        assert isinstance(message, PubSubMessage)
        if not message._dead_lettered:
            if not self.broker.dead_letter(self.queue_name, message._message.encode()):
                self.give_back_quietly([message._ack_id])
                return
            message._dead_lettered = True
        self.broker.acknowledge(self.queue_name, [message._ack_id])

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        """Give ``messages`` back to Pub/Sub (a worker that stops or restarts its consumer)."""
        ack_ids = [message._ack_id for message in messages if isinstance(message, PubSubMessage)]
        if ack_ids:
            self.broker.give_back(self.queue_name, ack_ids)

    def give_back_quietly(self, ack_ids: list[str]) -> None:
        """Give ``ack_ids`` back; if Pub/Sub cannot be told, their deadline runs out instead."""
        try:
            self.broker.give_back(self.queue_name, ack_ids)
        except ConnectionClosed:
            logger.warning(
                "%d message(s) of %r come back once their deadline runs out.", len(ack_ids), self.queue_name
            )

    def close(self) -> None:
        """Give back the prefetched messages; on a delay queue, every delayed message still held.

        Dramatiq's consumer thread drops the delayed messages it holds in memory when its
        consumer fails (it requeues them only on a clean stop): their leases must end here, or
        this live worker would extend them for ever and nobody would deliver them.
        """
        buffered, self.buffer = list(self.buffer), deque()
        ack_ids = [message._ack_id for message in buffered]
        if self.queue_name.endswith(".DQ"):
            ack_ids = self.broker.leases.take_all(self.subscription)
        if ack_ids:
            self.give_back_quietly(ack_ids)
