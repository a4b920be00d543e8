"""The transactional outbox: a dispatch is a row in the caller's transaction; a relay publishes it.

With ``MESSENGER["TRANSPORTS"][name]["outbox"] = True`` the transport ``name`` is an
:class:`OutboxTransport`. Its send checks the envelope as the Dramatiq transport does (encoded,
measured and decoded as a worker will: a 413 or 400 still happens at the dispatch), builds the
Dramatiq message for the handler's actor (or the fan-out actor) and writes it to the
:class:`~django_messenger.models.OutboxMessage` table, inside ``transaction.atomic()`` on the
outbox's database: a transaction of its own for a view (the 202 then means "committed"), a
savepoint of the caller's transaction in code, so that the message exists if and only if the
caller's transaction commits.

A :class:`Relay` publishes the rows, in ``id`` order, with ``publishing.publish`` (RabbitMQ's
confirms and ``PUBLISH_TIMEOUT`` included) and marks them sent in the transaction that read
them. It runs as a thread in every ``rundramatiq`` worker process (:class:`RelayMiddleware`) and
as ``manage.py messenger_relay``. Several relays share the table: on PostgreSQL (and other
databases with ``SELECT ... FOR UPDATE SKIP LOCKED``) each locks the rows it publishes and the
others skip them, so a row is published once unless a relay dies between the broker's confirm
and its commit (then another publishes it again: at-least-once; handlers de-duplicate by message
id). SQLite has no row locks: run one relay there (docs/reliability.md).

A publish the broker refuses (``BrokerUnavailable``: down, unreachable, no confirm in time)
stops the relay's pass with the row unsent, and the relay waits longer each time (up to
:data:`MAX_RELAY_BACKOFF` seconds) before it tries again: the rows keep their order. Any other
failure (a message the broker will never take, such as one over SQS's own size limit) is the
row's alone: it waits :func:`row_backoff` and the rows behind it go on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import Error as DatabaseError
from django.db import connections, transaction
from django.db import router as db_router
from django.db.models import F, Q
from django.utils import timezone
from dramatiq import Message, Middleware
from dramatiq.common import current_millis

from .conf import messenger_settings
from .delays import first_hop, hop_milliseconds
from .envelope import Envelope
from .exceptions import BrokerUnavailable
from .models import OutboxMessage
from .publishing import describe, publish
from .stamps import DelayStamp, OutboxStamp
from .transports import DramatiqTransport, router
from .transports.dramatiq.binding import binding

logger = logging.getLogger("django_messenger")

#: The longest wait, in seconds, of a relay whose broker refuses its publishes.
MAX_RELAY_BACKOFF = 10.0
#: The longest wait, in seconds, of a row whose publish failed for a reason of its own.
MAX_ROW_BACKOFF = 300.0
#: Seconds between two deletions of old sent rows by a running relay.
PRUNE_INTERVAL = 60.0
#: The longest ``last_error`` kept on a row.
MAX_ERROR_TEXT = 2000


def outbox_alias() -> str:
    """The database alias the outbox table is written on (Django's database routers decide)."""
    return str(db_router.db_for_write(OutboxMessage))


def has_outbox() -> bool:
    """Whether some transport of ``MESSENGER["TRANSPORTS"]`` has ``"outbox": True``."""
    return any(messenger_settings.outbox(name) for name in messenger_settings.TRANSPORTS)


class OutboxTransport(DramatiqTransport):
    """A Dramatiq transport whose send writes an :class:`OutboxMessage` instead of publishing."""

    def transaction_alias(self) -> str | None:
        """The outbox's database: inside its transaction a dispatch is written at once, in it."""
        return outbox_alias()

    def send(self, envelope: Envelope) -> Envelope:
        """Write ``envelope``'s Dramatiq message to the outbox; return it with an :class:`OutboxStamp`.

        Raises:
          NoHandlerForMessage, MessageTooLarge, MessageNotDeliverable: as the Dramatiq transport;
            nothing was written.
          BrokerUnavailable: the database did not take the row (``exc.envelope`` is ``envelope``).
        """
        actor = binding.target(type(envelope.message), self.name)
        payload = self.encode(envelope)
        message = actor.message_with_options(args=(payload,))
        stamp = envelope.last(DelayStamp)
        alias = outbox_alias()
        try:
            with transaction.atomic(using=alias):
                row = OutboxMessage.objects.using(alias).create(
                    message_id=envelope.message_id,
                    broker_message_id=message.message_id,
                    transport=self.name,
                    queue_name=actor.queue_name,
                    actor_name=actor.actor_name,
                    message=message.encode(),
                    delay=stamp.milliseconds if stamp is not None else None,
                    created_at=timezone.now(),
                )
        except DatabaseError as exc:
            logger.warning(
                "Message %s was not written to the outbox (database %r): %s",
                envelope.message_id,
                alias,
                describe(exc),
            )
            raise BrokerUnavailable(
                f"The outbox (database {alias!r}) did not take the message: {describe(exc)}",
                envelope=envelope,
            ) from exc
        return envelope.with_stamps(
            OutboxStamp(
                transport=self.name,
                queue_name=actor.queue_name,
                broker_message_id=message.message_id,
                outbox_id=row.pk,
            )
        )


def row_backoff(attempts: int) -> float:
    """Seconds a row waits after its ``attempts``-th failed publish: 1, 2, 4… up to MAX_ROW_BACKOFF."""
    return float(min(MAX_ROW_BACKOFF, 2.0 ** max(0, attempts - 1)))


@dataclass
class Pass:
    """What one pass of a relay did: rows published, and whether the broker refused one."""

    sent: int = 0
    refused: bool = False
    #: Rows read (published or not): a full batch means more may be waiting.
    read: int = 0


class Relay:
    """Publishes the outbox's rows to ``broker`` (django-dramatiq's by default)."""

    def __init__(self, broker: Any = None, *, alias: str | None = None) -> None:
        self.broker = broker if broker is not None else binding.broker
        self.alias = alias if alias is not None else outbox_alias()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass -----------------------------------------------------------------

    def publish_due(self) -> Pass:
        """Lock up to ``OUTBOX_BATCH_SIZE`` due unsent rows, publish them in id order, mark them sent.

        Raises DatabaseError when the database fails (nothing is marked; what was published
        before will be published again).
        """
        result = Pass()
        now = timezone.now()
        connection = connections[self.alias]
        with transaction.atomic(using=self.alias):
            rows = (
                OutboxMessage.objects.using(self.alias)
                .filter(sent_at__isnull=True)
                .filter(Q(available_at__isnull=True) | Q(available_at__lte=now))
                .order_by("id")
                .only("id", "message_id", "message", "delay", "attempts")
            )
            if connection.features.has_select_for_update_skip_locked:
                rows = rows.select_for_update(skip_locked=True)
            batch = list(rows[: messenger_settings.OUTBOX_BATCH_SIZE])
            result.read = len(batch)
            sent: list[int] = []
            for row in batch:
                try:
                    self.publish_row(row)
                except BrokerUnavailable as exc:
                    logger.warning(
                        "The outbox relay could not publish message %s (outbox row %s); it tries again "
                        "later: %s",
                        row.message_id,
                        row.pk,
                        exc.reason,
                    )
                    self._note_failure(row, exc.reason, wait=None)
                    result.refused = True
                    break
                except Exception as exc:  # this row's own failure: it waits, the others go on
                    wait = row_backoff(row.attempts + 1)
                    logger.error(
                        "The outbox relay could not publish message %s (outbox row %s), tries again in "
                        "%g s: %s",
                        row.message_id,
                        row.pk,
                        wait,
                        describe(exc),
                    )
                    self._note_failure(row, describe(exc), wait=wait)
                    continue
                sent.append(row.pk)
            self._mark_sent(sent)
            result.sent = len(sent)
        return result

    def publish_row(self, row: OutboxMessage) -> Message[Any]:
        """Publish ``row``'s message; a delay counts from the dispatch, not from now."""
        message: Message[Any] = Message.decode(bytes(row.message))
        delay: int | None = None
        if row.delay is not None:
            now = current_millis()
            remaining = max(0, row.delay - (now - message.message_timestamp))
            delay, options = first_hop(remaining, hop=hop_milliseconds(), now=now)
            if options:
                message = message.copy(options={**message.options, **options})
        return publish(self.broker, message, delay=delay)

    def _note_failure(self, row: OutboxMessage, error: str, *, wait: float | None) -> None:
        available_at: datetime | None = timezone.now() + timedelta(seconds=wait) if wait is not None else None
        OutboxMessage.objects.using(self.alias).filter(pk=row.pk).update(
            attempts=F("attempts") + 1, last_error=error[:MAX_ERROR_TEXT], available_at=available_at
        )

    def _mark_sent(self, ids: list[int]) -> None:
        if not ids:
            return
        rows = OutboxMessage.objects.using(self.alias).filter(pk__in=ids)
        if messenger_settings.OUTBOX_KEEP_SENT == 0:
            rows.delete()
        else:
            rows.update(sent_at=timezone.now())

    def drain(self) -> Pass:
        """Passes until no due row is left or the broker refuses one; the total."""
        total = Pass()
        while True:
            result = self.publish_due()
            total.sent += result.sent
            total.read += result.read
            if result.refused:
                total.refused = True
                return total
            if result.read < messenger_settings.OUTBOX_BATCH_SIZE:
                return total

    def prune(self) -> int:
        """Delete the rows sent more than ``OUTBOX_KEEP_SENT`` seconds ago; how many."""
        cutoff = timezone.now() - timedelta(seconds=messenger_settings.OUTBOX_KEEP_SENT)
        deleted, _ = OutboxMessage.objects.using(self.alias).filter(sent_at__lt=cutoff).delete()
        return deleted

    # -- running ------------------------------------------------------------------

    def run(self) -> None:
        """Publish until :meth:`stop`: poll every ``OUTBOX_POLL_INTERVAL`` seconds when idle, back
        off while the broker or the database refuses, prune sent rows every minute."""
        poll = messenger_settings.OUTBOX_POLL_INTERVAL
        backoff = poll
        next_prune = 0.0
        logger.info("The outbox relay started (database %r).", self.alias)
        try:
            while not self._stop.is_set():
                try:
                    result = self.drain()
                    if timezone.now().timestamp() >= next_prune:
                        self.prune()
                        next_prune = timezone.now().timestamp() + PRUNE_INTERVAL
                except DatabaseError as exc:
                    logger.warning("The outbox relay could not read the outbox: %s", describe(exc))
                    connections[self.alias].close()  # the next pass reconnects
                    result = Pass(refused=True)
                if result.refused:
                    backoff = min(MAX_RELAY_BACKOFF, backoff * 2)
                    self._stop.wait(backoff)
                else:
                    backoff = poll
                    self._stop.wait(poll)
        finally:
            connections.close_all()  # this thread's connections only
            logger.info("The outbox relay stopped.")

    def start(self) -> None:
        """Run the relay in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="messenger-outbox-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the relay to stop after the pass it is in, and wait for its thread (``timeout`` s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class RelayMiddleware(Middleware):
    """Runs one :class:`Relay` thread in each worker process while a transport has an outbox
    (and ``MESSENGER["OUTBOX_RELAY_IN_WORKERS"]`` is on)."""

    def __init__(self) -> None:
        self.relay: Relay | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        if self.relay is not None or not has_outbox() or not messenger_settings.OUTBOX_RELAY_IN_WORKERS:
            return
        self.relay = Relay(broker)
        self.relay.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if self.relay is not None:
            # A pass publishes a batch, each publish bounded by PUBLISH_TIMEOUT: it ends, or the
            # process ends without marking it (those rows are published again).
            self.relay.stop(timeout=messenger_settings.PUBLISH_TIMEOUT * 2)
            self.relay = None


def install() -> None:
    """Let the router build outbox transports (called from the app's ``ready()``)."""
    router.outbox_factory = OutboxTransport
