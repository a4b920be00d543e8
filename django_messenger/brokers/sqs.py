"""dramatiq-sqs's SQSBroker, with what messenger's contract needs and its 0.4.4 release lacks.

``dramatiq_sqs.SQSBroker`` (0.4.4) sends and receives through one boto3 resource shared by
every thread, and boto3's resources (and its default session) are not thread-safe (upstream
issue #23); it holds a received message invisible for 12 hours, so a crashed worker's messages
come back only that much later; it creates queues without a redrive policy, so a message that
crashes the worker process every time is received again and again; it rounds a delay down to
whole seconds (a 1.5 s delay arrives after 1 s); its boto3 client waits 60 s for an answer and
retries, so a web request could hang on an unreachable SQS far longer than
``MESSENGER["PUBLISH_TIMEOUT"]``; and a body that is not a message is logged and left on the
queue, to come back forever.

:class:`SQSBroker` takes the same options and fixes those:

* **A boto3 client per thread**, made lazily (under a lock, from one session of the broker's)
  in each thread that sends or receives. A thread's *send* client is bounded by
  ``PUBLISH_TIMEOUT``: connecting and reading take half of it each, with one attempt and no
  retries, so a send that SQS does not answer fails in time (a 503 in the web). A consumer's
  client waits for SQS's long polls.
* **A visibility timeout from the time limit**: unless ``visibility_timeout`` is given, a
  message received from a queue stays invisible for twice the longest ``time_limit`` of the
  queue's actors plus :data:`VISIBILITY_MARGIN` seconds (a message may wait in the worker's
  prefetch behind one that runs, with Dramatiq's default prefetch of two messages a thread),
  or SQS's 12-hour maximum when no ``TimeLimit`` middleware bounds the handlers.
* **Queues created with a dead-letter queue and a redrive policy** (``<queue>_dlq``,
  ``maxReceiveCount`` = ``max_receives``): a message received that many times without being
  acknowledged (its worker crashed on it each time) is moved there by SQS itself. Dramatiq's
  own dead-lettering (a message whose retries ran out) sends to the same queue.
* **Delays rounded up** to whole seconds: SQS takes whole seconds up to 900, and a message must
  not arrive before it is due (a 1.5 s delay waits 2 s).
* **Bodies that are not messages** (not base64, not a Dramatiq message, or too large for
  ``BoundedJSONEncoder``) are sent to the dead-letter queue as they are, and deleted.
* **join** waits in milliseconds, as Dramatiq's ``Broker.join`` says (0.4.4 read seconds).
* **A message larger than SQS takes** raises :class:`MessageTooLargeForSQS`, messenger's
  ``MessageTooLarge`` (a 413 in the web, never a 503): SQS measures the base64 text
  dramatiq-sqs sends, at most ``max_message_size`` bytes (1 MiB, SQS's quota, by default).

Queues are created with ``MaximumMessageSize`` = ``max_message_size``. A queue that already
exists (made by infrastructure code, say) is used as it is: give it the redrive policy there.
See docs/transports.md, "Amazon SQS".
"""

from __future__ import annotations

import binascii
import json
import logging
import math
import threading
import time
from base64 import b64decode, b64encode
from collections import deque
from collections.abc import Iterable
from typing import Any

import boto3
import dramatiq
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.middleware import TimeLimit
from dramatiq_sqs import broker as dramatiq_sqs

from ..conf import messenger_settings
from ..exceptions import MessageTooLarge

__all__ = [
    "DEFAULT_MAX_RECEIVES",
    "MAX_DELAY_SECONDS",
    "MAX_VISIBILITY_TIMEOUT_SECONDS",
    "MessageTooLargeForSQS",
    "SQSBroker",
    "SQSConsumer",
    "delay_seconds",
    "largest_envelope",
]

logger = logging.getLogger("django_messenger")

#: SQS's longest delay, in seconds (15 minutes).
MAX_DELAY_SECONDS: int = dramatiq_sqs.MAX_DELAY_SECONDS
#: SQS's longest visibility timeout, in seconds (12 hours).
MAX_VISIBILITY_TIMEOUT_SECONDS: int = dramatiq_sqs.MAX_VISIBILITY_TIMEOUT_SECONDS
#: How many times SQS hands out a message before its redrive policy dead-letters it.
DEFAULT_MAX_RECEIVES = 5
#: Seconds added to a derived visibility timeout: fetching, acknowledging, a slow clock.
VISIBILITY_MARGIN = 30
#: Seconds a consumer's client waits for an answer beyond a long poll's wait.
RECEIVE_READ_MARGIN = 10
#: The suffix of a queue's dead-letter queue, as dramatiq-sqs names it.
DEAD_LETTER_SUFFIX = "_dlq"
#: The room a Dramatiq message takes around its envelope (see dramatiq_encoder.OPTIONS_ALLOWANCE).
MESSAGE_ALLOWANCE = 64 * 1024


def delay_seconds(delay: int | None) -> int:
    """A delay in milliseconds as SQS takes it: whole seconds, rounded up (never early)."""
    return math.ceil(max(0, delay or 0) / 1000)


def largest_envelope(max_message_size: int) -> int:
    """The largest ``MAX_MESSAGE_SIZE`` whose messages fit in SQS's ``max_message_size`` bytes.

    SQS measures the base64 text of the Dramatiq message (4 bytes for every 3), and the message
    holds the envelope plus Dramatiq's keys and options (:data:`MESSAGE_ALLOWANCE`).
    """
    return max(0, max_message_size * 3 // 4 - MESSAGE_ALLOWANCE)


class MessageTooLargeForSQS(MessageTooLarge):
    """A Dramatiq message whose base64 text is larger than the SQS broker's ``max_message_size``."""

    def __init__(self, limit: int, size: int) -> None:
        super().__init__(limit, size)
        self.reason = (
            f"The message is {size} bytes as SQS receives it (base64), larger than the SQS broker's "
            f"max_message_size ({limit} bytes)."
        )


class SQSMessage(dramatiq.MessageProxy):
    """A Dramatiq message received from SQS, with the receipt handle that acknowledges it."""

    def __init__(self, message: dramatiq.Message[Any], *, receipt_handle: str, body: str) -> None:
        super().__init__(message)
        self._receipt_handle = receipt_handle
        self._body = body


class SQSBroker(dramatiq_sqs.SQSBroker):
    """dramatiq-sqs's broker (same options) with per-thread clients and bounded sends.

    Parameters beyond dramatiq-sqs's:
      dead_letter: True by default (dramatiq-sqs: False): every queue has a ``<queue>_dlq``.
      visibility_timeout: seconds a received message stays invisible; None (the default)
        derives it from the queue's actors' time limits.
      max_receives: the redrive policy's ``maxReceiveCount`` (:data:`DEFAULT_MAX_RECEIVES`).
      **options: passed to ``boto3.session.Session().client("sqs", ...)``: ``endpoint_url``,
        ``region_name``, credentials, a botocore ``config`` (its timeouts and retries are
        replaced by messenger's on the send client).
    """

    def __init__(
        self,
        *,
        namespace: str | None = None,
        middleware: list[dramatiq.Middleware] | None = None,
        retention: int = dramatiq_sqs.MAX_MESSAGE_RETENTION_SECONDS,
        dead_letter: bool = True,
        dead_letter_retention: int = dramatiq_sqs.MAX_MESSAGE_RETENTION_SECONDS,
        visibility_timeout: int | None = None,
        max_message_size: int = dramatiq_sqs.MAX_MESSAGE_SIZE_BYTES,
        max_receives: int = DEFAULT_MAX_RECEIVES,
        tags: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        if visibility_timeout is not None and not 0 <= visibility_timeout <= MAX_VISIBILITY_TIMEOUT_SECONDS:
            raise ValueError(
                f"'visibility_timeout' must be between 0 and {MAX_VISIBILITY_TIMEOUT_SECONDS} seconds."
            )
        if not 1 <= max_receives <= 1000:
            raise ValueError("'max_receives' must be between 1 and 1000 (SQS's maxReceiveCount).")
        super().__init__(
            namespace=namespace,
            middleware=middleware,
            retention=retention,
            dead_letter=dead_letter,
            dead_letter_retention=dead_letter_retention,
            visibility_timeout=visibility_timeout,
            max_message_size=max_message_size,
            tags=tags,
            **options,
        )
        self.max_receives = max_receives
        self.client_options = options
        self._local = threading.local()
        self._session: Any = None
        self._session_lock = threading.Lock()
        self._urls: dict[str, str] = {}
        self._dead_letter_urls: dict[str, str] = {}
        self._urls_lock = threading.Lock()

    # --- clients, one per thread ------------------------------------------------------------------

    def send_config(self) -> Config:
        """The botocore config of a send: connecting plus reading within ``PUBLISH_TIMEOUT``, one try."""
        half = messenger_settings.PUBLISH_TIMEOUT / 2
        return Config(connect_timeout=half, read_timeout=half, retries={"total_max_attempts": 1})

    def receive_config(self, wait_seconds: int) -> Config:
        """The botocore config of a consumer: a read outlasts a long poll of ``wait_seconds``."""
        return Config(
            connect_timeout=10,
            read_timeout=wait_seconds + RECEIVE_READ_MARGIN,
            retries={"mode": "standard", "max_attempts": 3},
        )

    def client(self, role: str = "send", *, wait_seconds: int = 0) -> Any:
        """This thread's boto3 SQS client for ``role`` ("send" or "receive"), made on first use.

        boto3's clients are thread-safe once made, but making one from a session is not (nor is
        anything done with a resource): every client is made under a lock, from one session of
        the broker's (its credentials, fetched once, are shared), and each thread uses its own.
        The send client's timeouts follow PUBLISH_TIMEOUT when it changes.
        """
        config = self.send_config() if role == "send" else self.receive_config(wait_seconds)
        clients: dict[tuple[str, Any], Any] = self._local.__dict__.setdefault("clients", {})
        key = (role, (config.connect_timeout, config.read_timeout))
        client = clients.get(key)
        if client is None:
            options = dict(self.client_options)
            given = options.pop("config", None)
            with self._session_lock:
                if self._session is None:
                    self._session = boto3.session.Session()
                client = self._session.client(
                    "sqs", config=given.merge(config) if given else config, **options
                )
            clients[key] = client
        return client

    # --- queues -----------------------------------------------------------------------------------

    def sqs_queue_name(self, queue_name: str) -> str:
        return f"{self.namespace}_{queue_name}" if self.namespace else queue_name

    def queue_url(self, queue_name: str, *, role: str = "send") -> str:
        """The URL of ``queue_name``'s SQS queue, created (with its dead-letter queue) if missing."""
        url = self._urls.get(queue_name)
        if url is not None:
            return url
        if queue_name not in self.queue_names:
            raise dramatiq.QueueNotFound(queue_name)
        client = self.client(role)
        name = self.sqs_queue_name(queue_name)
        dead_letter_url = None
        if self.dead_letter:
            dead_letter_url = self._get_or_create(
                client, name + DEAD_LETTER_SUFFIX, self.dead_letter_retention
            )
        url = self._get_or_create(client, name, self.retention, dead_letter_url=dead_letter_url)
        with self._urls_lock:
            self._urls[queue_name] = url
            if dead_letter_url is not None:
                self._dead_letter_urls[queue_name] = dead_letter_url
        return url

    def dead_letter_url(self, queue_name: str) -> str | None:
        """The URL of ``queue_name``'s dead-letter queue (None without ``dead_letter``)."""
        self.queue_url(queue_name)
        return self._dead_letter_urls.get(queue_name)

    def _get_or_create(
        self, client: Any, name: str, retention: int, *, dead_letter_url: str | None = None
    ) -> str:
        try:
            url: str = client.get_queue_url(QueueName=name)["QueueUrl"]
        except client.exceptions.QueueDoesNotExist:
            pass
        else:
            if self.tags:
                client.tag_queue(QueueUrl=url, Tags=self.tags)
            return url
        attributes = {
            "MessageRetentionPeriod": str(retention),
            "MaximumMessageSize": str(self.max_message_size),
        }
        if dead_letter_url is not None:
            arn = client.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": self.max_receives}
            )
        logger.info("Creating the SQS queue %r.", name)
        created: str = client.create_queue(QueueName=name, Attributes=attributes, tags=self.tags or {})[
            "QueueUrl"
        ]
        return created

    # --- sending ----------------------------------------------------------------------------------

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Send ``message``, delayed by ``delay`` ms (rounded up to whole seconds, at most 900 s)."""
        seconds = delay_seconds(delay)
        if seconds > MAX_DELAY_SECONDS:
            raise dramatiq_sqs.MessageDelayTooLong(
                f"Messages in SQS cannot be delayed for longer than {MAX_DELAY_SECONDS} seconds "
                f"({seconds} s asked)."
            )
        body = b64encode(message.encode()).decode()
        if len(body) > self.max_message_size:
            raise MessageTooLargeForSQS(self.max_message_size, len(body))
        url = self.queue_url(message.queue_name)
        self.emit_before("enqueue", message, delay)
        self.client("send").send_message(QueueUrl=url, MessageBody=body, DelaySeconds=seconds)
        self.emit_after("enqueue", message, delay)
        return message

    # --- receiving --------------------------------------------------------------------------------

    def visibility_timeout_for(self, queue_name: str) -> int:
        """Seconds a message received from ``queue_name`` stays invisible (see the module's doc)."""
        explicit: int | None = self.visibility_timeout
        if explicit is not None:
            return explicit
        time_limit = next((m for m in self.middleware if isinstance(m, TimeLimit)), None)
        if time_limit is None:
            return MAX_VISIBILITY_TIMEOUT_SECONDS
        limits = [
            actor.options.get("time_limit", time_limit.time_limit)
            for actor in self.actors.values()
            if actor.queue_name == queue_name
        ] or [time_limit.time_limit]
        longest: int = max(limits)
        seconds = 2 * math.ceil(longest / 1000) + VISIBILITY_MARGIN
        return min(seconds, MAX_VISIBILITY_TIMEOUT_SECONDS)

    def consume(
        self,
        queue_name: str,
        prefetch: int = 1,
        timeout: int = dramatiq_sqs.MAX_WAIT_TIME_SECONDS * 1000,
    ) -> SQSConsumer:
        if queue_name not in self.queue_names:
            raise dramatiq.QueueNotFound(queue_name)
        return SQSConsumer(
            self,
            queue_name,
            prefetch=prefetch,
            timeout=timeout,
            visibility_timeout=self.visibility_timeout_for(queue_name),
        )

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until ``queue_name`` holds no message, visible, delayed or in flight."""
        url = self.queue_url(queue_name)
        deadline = timeout and time.monotonic() + timeout / 1000
        counts = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesDelayed",
            "ApproximateNumberOfMessagesNotVisible",
        ]
        while True:
            found = self.client("send").get_queue_attributes(QueueUrl=url, AttributeNames=counts)
            if sum(int(found["Attributes"][name]) for name in counts) == 0:
                return
            if deadline and time.monotonic() >= deadline:
                raise dramatiq.errors.QueueJoinTimeout(queue_name)
            time.sleep(1)


class SQSConsumer(dramatiq.Consumer):
    """Receives a queue's messages on its thread's client; dead-letters bodies that are not messages."""

    def __init__(
        self, broker: SQSBroker, queue_name: str, *, prefetch: int, timeout: int, visibility_timeout: int
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, min(prefetch, dramatiq_sqs.MAX_PREFETCH))
        self.wait_seconds = min(timeout // 1000, dramatiq_sqs.MAX_WAIT_TIME_SECONDS)
        self.visibility_timeout = visibility_timeout
        self.messages: deque[SQSMessage] = deque()
        self.message_refc = 0
        self._refc_lock = threading.Lock()  # worker threads ack and nack concurrently
        self.misses = 0

    def _release(self, count: int = 1) -> None:
        with self._refc_lock:
            self.message_refc -= count

    @property
    def sqs(self) -> Any:
        return self.broker.client("receive", wait_seconds=self.wait_seconds)

    def _call(self, method: str, **kwargs: Any) -> Any:
        """A call on this thread's client; a network failure is Dramatiq's ConnectionClosed."""
        try:
            return getattr(self.sqs, method)(**kwargs)
        except BotoCoreError as exc:
            raise ConnectionClosed(exc) from None

    def ack(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, SQSMessage)
        url = self.broker.queue_url(self.queue_name, role="receive")
        self._call("delete_message", QueueUrl=url, ReceiptHandle=message._receipt_handle)
        self._release()

    def nack(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, SQSMessage)
        self.dead_letter(message._body, message._receipt_handle)
        self._release()

    def dead_letter(self, body: str, receipt_handle: str) -> None:
        """Move a received body to the queue's dead-letter queue (or only delete it, without one)."""
        url = self.broker.queue_url(self.queue_name, role="receive")
        dead_letter_url = self.broker.dead_letter_url(self.queue_name)
        if dead_letter_url is not None:
            self._call("send_message", QueueUrl=dead_letter_url, MessageBody=body)
        self._call("delete_message", QueueUrl=url, ReceiptHandle=receipt_handle)

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        """Make ``messages`` visible again at once (a worker that stops gives back what it holds)."""
        url = self.broker.queue_url(self.queue_name, role="receive")
        batch: list[SQSMessage] = []
        for message in [*messages, None]:
            if message is not None:
                assert isinstance(message, SQSMessage)
                batch.append(message)
            if batch and (message is None or len(batch) == 10):
                entries = [
                    {"Id": str(n), "ReceiptHandle": m._receipt_handle, "VisibilityTimeout": 0}
                    for n, m in enumerate(batch)
                ]
                answer = self._call("change_message_visibility_batch", QueueUrl=url, Entries=entries)
                self._release(len(answer.get("Successful", [])))
                batch = []

    def close(self) -> None:
        buffered, self.messages = list(self.messages), deque()
        if buffered:
            self.requeue(buffered)

    def receive(self) -> None:
        """Fetch up to the free prefetch room of messages, waiting up to ``wait_seconds`` for some."""
        answer = self._call(
            "receive_message",
            QueueUrl=self.broker.queue_url(self.queue_name, role="receive"),
            MaxNumberOfMessages=min(dramatiq_sqs.MAX_PREFETCH, self.prefetch - self.message_refc),
            WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=self.visibility_timeout,
        )
        for received in answer.get("Messages", []):
            body, receipt_handle = received["Body"], received["ReceiptHandle"]
            try:
                message = dramatiq.Message.decode(b64decode(body, validate=True))
            except (binascii.Error, ValueError, DecodeError) as exc:
                self.dead_letter(body, receipt_handle)
                logger.error(
                    "A body of %d bytes on the SQS queue %r is not a message (%s): dead-lettered.",
                    len(body),
                    self.queue_name,
                    getattr(exc, "error", exc),
                )
                continue
            self.messages.append(SQSMessage(message, receipt_handle=receipt_handle, body=body))
            self._release(-1)

    def __next__(self) -> SQSMessage | None:
        polled = False
        if not self.messages and self.message_refc < self.prefetch:
            self.receive()
            polled = True
        if self.messages:
            self.misses = 0
            return self.messages.popleft()
        if polled and self.wait_seconds > 0:
            return None  # the long poll already waited
        # The prefetch is full (or polls do not wait): back off, as dramatiq-sqs does, not to spin
        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=1000)
        time.sleep(backoff_ms / 1000)
        return None
