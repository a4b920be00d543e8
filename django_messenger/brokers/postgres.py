"""dramatiq-postgres' broker, sending on the caller's Django connection, within ``PUBLISH_TIMEOUT``.

`dramatiq-postgres <https://github.com/danielgatis/dramatiq-postgres>`_ keeps Dramatiq's
queues in a PostgreSQL table: an enqueue is an ``INSERT`` (an upsert on the message id),
a worker claims rows with ``FOR UPDATE SKIP LOCKED``, an ack deletes the row, a nack marks
it ``rejected`` (the dead letters), a delay is the row's ``available_at``, and a worker that
stops heart-beating has its claimed rows put back by the maintenance of the others.

:class:`PostgresBroker` is that broker (same options) with these changes:

* **The enqueue runs on the caller's Django connection** (the ``database`` alias,
  ``"default"`` unless told). Outside a transaction it commits at once; inside
  ``transaction.atomic()`` the row is written in a savepoint of the caller's transaction,
  so the message exists if and only if that transaction commits (its ``NOTIFY`` is
  delivered at the commit too). The broker's own pool (``url``, or the alias's settings
  when there is none) serves the workers only: claims, acks, heartbeats, ``LISTEN``.
* **An enqueue is one attempt, bounded by ``MESSENGER["PUBLISH_TIMEOUT"]``.** dramatiq-postgres
  retries a failed enqueue up to 10 times with waits of up to 30 s each. Here, connecting is
  bounded by the alias's ``connect_timeout`` (psycopg waits at least 2 s; W010 without one),
  and the statement by a timer that shuts the connection's socket down when the time left
  runs out, which ends libpq's wait whatever the server does (silent, or gone). A reused
  connection that turns out dead is reconnected once within the same deadline, outside a
  transaction only. Any failure raises :class:`~django_messenger.exceptions.BrokerUnavailable`.
* **Its consumers decode row by row.** dramatiq-postgres decodes the rows it claimed in one
  batch: one body that is not a message raises out of the consumer, and the other rows of
  the batch stay claimed by a live worker, which nothing requeues until the worker stops.
  Here an undecodable row is dead-lettered (``rejected``, body unchanged) and the others
  are delivered. A consumer restarted after a connection error puts back, first, the rows
  its worker claimed on its queue and no longer holds (rows claimed but not yet handed
  out; on a delay queue every claimed row, since Dramatiq drops its in-memory delayed
  messages then), instead of leaving them claimed by a live worker.
* **A rejection waits for the failure store.** The failure store is in this database too:
  when messenger's middleware could neither store nor hold a failure (the database down),
  it marks the message (:data:`~django_messenger.brokers.FAILURE_NOT_KEPT`) and the consumer
  refuses to dead-letter it; Dramatiq tries the rejection again, and the failure with it,
  until the database is back.

Results are off by default (``results=False``): messenger does not read Dramatiq results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from textwrap import dedent
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db import Error as DjangoDatabaseError
from dramatiq import Message
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import BrokerConnectionError, DecodeError
from dramatiq_postgres import broker as dramatiq_postgres
from dramatiq_postgres.utils import QueryManager
from psycopg import OperationalError

from ..conf import messenger_settings
from ..exceptions import BrokerUnavailable
from . import FAILURE_NOT_KEPT

__all__ = ["PostgresBroker", "PostgresConsumer", "conninfo_of"]

logger = logging.getLogger("django_messenger")

#: The keys of a Django PostgreSQL database's OPTIONS that are Django's, not libpq's.
DJANGO_OPTIONS = frozenset({"isolation_level", "server_side_binding", "pool", "assume_role"})

#: dramatiq-postgres' enqueue upsert, with the body as text cast to jsonb (no psycopg adapter:
#: it runs on Django's cursor); ENQUEUE adds the NOTIFY that wakes the consumers.
UPSERT = dedent("""\
    INSERT INTO {schema}.{tablename}
    (queue_name, message_id, "state", message, available_at)
    VALUES (%s, %s, 'queued', %s::jsonb, NOW() + make_interval(secs => %s / 1000.0))
    ON CONFLICT (message_id)
        DO UPDATE SET
            "state" = 'queued',
            message = EXCLUDED.message,
            queue_name = EXCLUDED.queue_name,
            available_at = EXCLUDED.available_at,
            worker_id = NULL,
            consumed_at = NULL,
            mtime = NOW()""")

QUERIES = QueryManager(
    {
        "ENQUEUE": (
            "WITH enqueued AS (\n"
            + UPSERT
            + "\n    RETURNING queue_name\n)\n"
            + "SELECT pg_notify('dramatiq.' || queue_name || '.enqueue', '') FROM enqueued;\n"
        ),
        "ENQUEUE_QUIET": UPSERT + ";\n",
        # dramatiq-postgres' CLAIM, returning each row's id with its body.
        "CLAIM": dedent("""\
        WITH next AS (
            SELECT message_id
            FROM {schema}.{tablename}
            WHERE queue_name = %s AND "state" = 'queued' AND available_at <= NOW()
            ORDER BY available_at, position
            LIMIT %s
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {schema}.{tablename} AS q
            SET "state" = 'consumed', worker_id = %s, consumed_at = NOW(), mtime = NOW()
        FROM next
        WHERE q.message_id = next.message_id
        RETURNING q.message_id::text, q.message::text;
        """),
        "REJECT_UNDECODABLE": dedent("""\
        UPDATE {schema}.{tablename}
            SET "state" = 'rejected', worker_id = NULL, mtime = NOW()
        WHERE message_id = %s AND "state" = 'consumed';
        """),
        "REQUEUE_STRANDED": dedent("""\
        UPDATE {schema}.{tablename}
            SET "state" = 'queued', worker_id = NULL, consumed_at = NULL, mtime = NOW()
        WHERE queue_name = %s AND "state" = 'consumed' AND worker_id = %s
            AND NOT (message_id = ANY(%s::uuid[]));
        """),
    }
)


def conninfo_of(alias: str) -> dict[str, Any]:
    """The libpq connection parameters of Django's database ``alias`` (for the workers' pool)."""
    settings_dict = connections.settings[alias]
    params: dict[str, Any] = {
        key: value for key, value in (settings_dict.get("OPTIONS") or {}).items() if key not in DJANGO_OPTIONS
    }
    for key, setting in (("dbname", "NAME"), ("user", "USER"), ("password", "PASSWORD")):
        if settings_dict.get(setting):
            params.setdefault(key, settings_dict[setting])
    for key, setting in (("host", "HOST"), ("port", "PORT")):
        if settings_dict.get(setting):
            params.setdefault(key, str(settings_dict[setting]))
    return params


class _Deadline:
    """Shut down a connection's socket if a statement is still running when the time is up.

    libpq has no read timeout: a statement waits for its answer as long as the socket
    lives. ``shutdown()`` on the socket (from a timer thread) ends that wait at once, and
    the statement raises ``OperationalError``. A lock orders the timer with the end of the
    statement, so that a statement that finished in time is never cut afterwards.
    """

    def __init__(self, fileno: int, seconds: float) -> None:
        self.fileno = fileno
        self.fired = False
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            # A second socket object on a duplicate of the descriptor: shutdown() acts on the
            # connection itself; closing the duplicate leaves the original descriptor alone.
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(self.fileno)) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


class PostgresBroker(dramatiq_postgres.PostgresBroker):
    """dramatiq-postgres' ``PostgresBroker`` (same options) enqueuing on Django's connection.

    Parameters:
      database: the Django database alias whose connection (and transaction) an enqueue
        uses; ``"default"`` unless given. It must be a PostgreSQL database holding the
        queue table (E013).
      url, pool: the workers' connections; without either, the alias's own settings.
      results: Dramatiq's Results middleware on the broker's tables; off unless asked.

    Every other keyword is dramatiq-postgres' (``schema``, ``prefix``, ``listen``, ``notify``,
    ``poll_interval``, ``heartbeat_interval``, ``heartbeat_ttl``, ``maintenance_interval``,
    ``purge_maxage``, ``middleware``).
    """

    #: An enqueue joins the transaction of the ``database`` alias's connection, if one is open.
    transactional = True

    def __init__(
        self,
        *,
        database: str = DEFAULT_DB_ALIAS,
        url: Any = "",
        pool: Any = None,
        results: bool = False,
        schema: str | None = None,
        prefix: str | None = None,
        **options: Any,
    ) -> None:
        if not url and pool is None and database in connections.settings:
            url = conninfo_of(database)
        super().__init__(url=url, pool=pool, results=results, schema=schema, prefix=prefix, **options)
        QUERIES.build_queries(schema, prefix)
        self.database = database
        #: Where the queue table is: ``<schema>.<prefix>queue`` (dramatiq-postgres' defaults when not given).
        self.schema = schema or "dramatiq"
        self.prefix = prefix or ""
        #: Ids of the messages this process's consumers handed to Dramatiq and not yet acked.
        self.handed_out: set[str] = set()
        self.handed_out_lock = threading.Lock()

    # -- sending --------------------------------------------------------------------

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Write ``message`` on the ``database`` connection (in its transaction, if one is open).

        Raises:
          BrokerUnavailable: the row was not written within ``PUBLISH_TIMEOUT`` (nothing was
            written, or, inside a transaction, nothing will be unless it is retried).
        """
        self.emit_before("enqueue", message, delay)
        if delay:
            message = message.copy(queue_name=dq_name(message.queue_name))
            message.options["eta"] = current_millis() + delay
        query = QUERIES.ENQUEUE if self.notify else QUERIES.ENQUEUE_QUIET
        params = (message.queue_name, message.message_id, message.encode().decode("utf-8"), delay or 0)
        logger.debug("Inserting message %s in queue %s.", message.message_id, message.queue_name)
        self._write(query, params)
        self.emit_after("enqueue", message, delay)
        return message

    def _write(self, query: str, params: tuple[Any, ...]) -> None:
        timeout = messenger_settings.PUBLISH_TIMEOUT
        deadline = time.monotonic() + timeout
        connection = connections[self.database]
        retried = False
        while True:
            reused = connection.connection is not None
            in_transaction = connection.in_atomic_block
            cut = False
            try:
                connection.ensure_connection()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerUnavailable(
                        f"Connecting to PostgreSQL (database {self.database!r}) took the whole publish "
                        f"timeout of {timeout:g} s; the message was not written."
                    )
                with _Deadline(connection.connection.fileno(), remaining) as timer:
                    try:
                        if in_transaction:  # a savepoint: a failure leaves the caller's transaction usable
                            with transaction.atomic(using=self.database), connection.cursor() as cursor:
                                cursor.execute(query, params)
                        else:
                            with connection.cursor() as cursor:
                                cursor.execute(query, params)
                    finally:
                        cut = timer.fired
                return
            except BrokerUnavailable:
                raise
            except DjangoDatabaseError as exc:
                if not in_transaction:
                    connection.close()  # the next send reconnects
                if reused and not in_transaction and not cut and not retried and deadline > time.monotonic():
                    retried = True  # a connection that died while idle: once more, within the deadline
                    continue
                raise BrokerUnavailable(self._explain(exc, cut, timeout)) from exc

    def _explain(self, exc: BaseException, cut: bool, timeout: float) -> str:
        if cut:
            return (
                f"PostgreSQL (database {self.database!r}) did not answer the message's INSERT within the "
                f"publish timeout of {timeout:g} s (MESSENGER['PUBLISH_TIMEOUT']); the connection was "
                "shut down and the message counts as not written."
            )
        return (
            f"PostgreSQL (database {self.database!r}) did not take the message ({exc!r}); it was not "
            "written. Check that the database is running and reachable."
        )

    # -- receiving ------------------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> PostgresConsumer:
        return PostgresConsumer(broker=self, queue_name=queue_name, prefetch=prefetch, timeout=timeout)

    def holding(self) -> list[str]:
        with self.handed_out_lock:
            return list(self.handed_out)


class PostgresConsumer(dramatiq_postgres.PostgresConsumer):
    """dramatiq-postgres' consumer, decoding row by row and putting back what it stranded."""

    broker: PostgresBroker

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._requeued_stranded = False

    def __next__(self) -> Any:
        if not self._requeued_stranded:
            try:
                self.requeue_stranded()
            except OperationalError as exc:  # as dramatiq-postgres: the worker restarts the consumer
                raise BrokerConnectionError(str(exc)) from None
            self._requeued_stranded = True
        message = super().__next__()
        if message is not None:
            with self.broker.handed_out_lock:
                self.broker.handed_out.add(message.message_id)
        return message

    def requeue_stranded(self) -> None:
        """Put back the rows this worker claimed on this queue that no thread of it holds.

        Rows a previous consumer of this queue claimed but never handed out (its buffer) or
        handed to Dramatiq's delay queue (dropped when the consumer restarts), would stay
        claimed by a live worker: the maintenance only requeues a dead worker's rows.
        """
        holding = [] if self.queue_name.endswith(".DQ") else self.broker.holding()
        with dramatiq_postgres.transaction(self.get_consume_conn()) as cursor:
            cursor.execute(QUERIES.REQUEUE_STRANDED, (self.queue_name, self.broker.worker_id, holding))
            if cursor.rowcount:
                logger.warning(
                    "Put back %d message(s) of queue %r that this worker had claimed but no longer held.",
                    cursor.rowcount,
                    self.queue_name,
                )

    def claim(self, limit: int) -> None:
        try:
            with dramatiq_postgres.transaction(self.get_consume_conn()) as cursor:
                cursor.execute(QUERIES.CLAIM, (self.queue_name, limit, self.broker.worker_id))
                rows = cursor.fetchall()
        except OperationalError as exc:
            raise BrokerConnectionError(str(exc)) from None
        for row_id, body in rows:
            data = body.encode("utf-8")
            try:
                self.buffer.append(Message.decode(data))
            except DecodeError as error:
                self.dead_letter_undecodable(row_id, data, error)

    def dead_letter_undecodable(self, row_id: str, data: bytes, error: DecodeError) -> None:
        """Mark the claimed row ``row_id`` rejected (the dead letters), its body unchanged."""
        try:
            with dramatiq_postgres.transaction(self.get_consume_conn()) as cursor:
                cursor.execute(QUERIES.REJECT_UNDECODABLE, (row_id,))
        except OperationalError as exc:  # the row stays claimed: requeued when the consumer restarts
            raise BrokerConnectionError(str(exc)) from None
        logger.error(
            "A body of %d bytes on the queue %r is not a message (%s): dead-lettered.",
            len(data),
            self.queue_name,
            error.error,
        )

    def ack(self, message: Any) -> None:
        super().ack(message)
        self._release(message)

    def nack(self, message: Any) -> None:
        if getattr(message, FAILURE_NOT_KEPT, False):
            # The failure store is in this database too, and it could not store the failure: the
            # database is down. Dramatiq tries the rejection again (every 5 s), and messenger's
            # middleware the failure with it, until the database is back.
            raise BrokerConnectionError(
                f"Message {message.message_id} is not dead-lettered yet: its failure could not be stored."
            )
        super().nack(message)
        self._release(message)

    def requeue(self, messages: Any) -> None:
        messages = list(messages)
        super().requeue(messages)
        for message in messages:
            self._release(message)

    def _release(self, message: Any) -> None:
        with self.broker.handed_out_lock:
            self.broker.handed_out.discard(message.message_id)
