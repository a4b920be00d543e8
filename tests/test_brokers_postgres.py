"""django_messenger.brokers.postgres: the enqueue on Django's connection, and the consumer's fixes.

In-process, on the unit tests' PostgreSQL database, with the broker's tables in a schema of
each test (the worker-side behaviour with real processes is in the contract suite).
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.core.handlers.base import BaseHandler
from django.db import connection, transaction
from dramatiq import Message
from dramatiq.errors import BrokerConnectionError
from dramatiq_postgres import init
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from django_messenger import bus
from django_messenger.brokers import FAILURE_NOT_KEPT
from django_messenger.brokers.postgres import PostgresBroker, _Deadline, conninfo_of
from django_messenger.exceptions import BrokerUnavailable
from django_messenger.locator import locator
from django_messenger.stamps import SentStamp
from django_messenger.transports.dramatiq import DramatiqTransport
from django_messenger.transports.dramatiq.binding import _declare_handler_actor, binding
from tests.testapp.messages import Ping
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def url() -> str:
    return f"postgresql://postgres@127.0.0.1:{connection.settings_dict['PORT']}/{connection.settings_dict['NAME']}"


class Tables:
    """The broker's tables in a schema of one test, read over a connection of their own."""

    def __init__(self) -> None:
        self.schema = f"messenger_unit_{uuid.uuid4().hex[:12]}"

    def create(self) -> None:
        with psycopg.connect(url()) as server, server.cursor() as cursor:
            init(cursor, schema=self.schema)

    def drop(self) -> None:
        with psycopg.connect(url(), autocommit=True) as server:
            server.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    psycopg.sql.Identifier(self.schema)
                )
            )

    def states(self, queue: str) -> dict[str, str]:
        """message id -> state, for the rows of ``queue`` (seen from another connection)."""
        query = psycopg.sql.SQL('SELECT message_id::text, "state"::text FROM {}.queue WHERE queue_name = %s')
        with psycopg.connect(url(), autocommit=True) as server:
            rows = server.execute(query.format(psycopg.sql.Identifier(self.schema)), (queue,)).fetchall()
        return dict(rows)

    def put(self, queue: str, document: str) -> str:
        row_id = str(uuid.uuid4())
        query = psycopg.sql.SQL(
            'INSERT INTO {}.queue (queue_name, message_id, "state", message) '
            "VALUES (%s, %s, 'queued', %s::jsonb)"
        )
        with psycopg.connect(url(), autocommit=True) as server:
            server.execute(query.format(psycopg.sql.Identifier(self.schema)), (queue, row_id, document))
        return row_id


@pytest.fixture
def tables() -> Iterator[Tables]:
    created = Tables()
    created.create()
    yield created
    created.drop()


@pytest.fixture
def pg(tables: Tables) -> Iterator[PostgresBroker]:
    broker = PostgresBroker(url=url(), schema=tables.schema, middleware=[], poll_interval=0.1)
    yield broker
    broker.close()


class RolledBack(Exception):
    pass


def message(queue: str = "q", text: str = "hi") -> Message[Any]:
    return Message(queue_name=queue, actor_name="an_actor", args=(text,), kwargs={}, options={})


# --- the enqueue: a row on the caller's connection ---------------------------------------------------


def test_an_enqueue_outside_a_transaction_is_committed_at_once(pg, tables):
    sent = pg.enqueue(message())

    assert tables.states("q") == {sent.message_id: "queued"}


def test_an_enqueue_without_notify_is_committed_at_once_too(tables):
    """``notify=False`` runs the same upsert without the NOTIFY that wakes the consumers."""
    broker = PostgresBroker(url=url(), schema=tables.schema, middleware=[], notify=False)
    try:
        sent = broker.enqueue(message())
    finally:
        broker.close()

    assert tables.states("q") == {sent.message_id: "queued"}


def test_an_enqueue_inside_a_transaction_exists_if_and_only_if_it_commits(pg, tables):
    # When one transaction rolls back after its enqueue
    with pytest.raises(RolledBack), transaction.atomic():
        rolled_back = pg.enqueue(message(text="rolled back"))
        raise RolledBack
    # And another one commits
    with transaction.atomic():
        committed = pg.enqueue(message(text="committed"))
        # Then the row is not there for anyone else before the commit
        assert tables.states("q") == {}

    # Then only the committed one exists
    assert tables.states("q") == {committed.message_id: "queued"}
    assert rolled_back.message_id not in tables.states("q")


def test_a_delayed_enqueue_waits_in_the_database(pg, tables):
    sent = pg.enqueue(message(), delay=60_000)

    assert sent.queue_name == "q.DQ" and sent.options["eta"] > 0
    assert tables.states("q.DQ") == {sent.message_id: "queued"}
    consumer = pg.consume("q.DQ")
    try:
        assert next(consumer) is None  # not claimable for a minute
    finally:
        consumer.close()


def test_a_failed_enqueue_inside_a_transaction_leaves_the_transaction_usable(tables):
    # Given a broker whose table does not exist
    broker = PostgresBroker(url=url(), schema=f"{tables.schema}_missing", middleware=[])
    try:
        with transaction.atomic():
            Effect.objects.create(handler="before", message_id=uuid.uuid4(), payload={})
            # When its enqueue fails inside the caller's transaction
            with pytest.raises(BrokerUnavailable) as raised:
                broker.enqueue(message())
            # Then the caller's transaction goes on (the INSERT ran in a savepoint)
            Effect.objects.create(handler="after", message_id=uuid.uuid4(), payload={})
    finally:
        broker.close()

    assert "not written" in raised.value.reason
    assert set(Effect.objects.values_list("handler", flat=True)) == {"before", "after"}


def test_the_pool_of_the_workers_comes_from_the_database_alias(tables):
    params = conninfo_of("default")
    assert params["dbname"] == connection.settings_dict["NAME"]
    assert params["host"] == connection.settings_dict["HOST"]

    broker = PostgresBroker(schema=tables.schema, middleware=[])  # no url: the alias's settings
    try:
        consumer = broker.consume("q")
        assert next(consumer) is None  # it connects and claims (nothing there)
        consumer.close()
    finally:
        broker.close()


def test_the_transport_writes_in_the_transaction_of_the_brokers_database(pg, monkeypatch):
    assert DramatiqTransport("async").transaction_alias() is None  # the unit tests' StubBroker

    monkeypatch.setattr(binding, "_broker", pg)

    assert DramatiqTransport("async").transaction_alias() == "default"


@pytest.fixture
def bound_to(pg: PostgresBroker, monkeypatch: pytest.MonkeyPatch) -> PostgresBroker:
    """Messenger bound to the PostgreSQL broker, with Ping's handler declared on it.

    Only that actor is declared, as the binding would: binding every handler to a broker
    without the unit tests' middleware would refuse handlers whose options it lacks.
    """
    [ping_handler] = locator.handlers_for(Ping)
    monkeypatch.setattr(binding, "_broker", pg)
    _declare_handler_actor(ping_handler, pg, binding.queue_of(ping_handler))
    return pg


def test_bus_dispatch_inside_a_transaction_writes_the_message_in_it(bound_to, tables):
    # When code dispatches inside a transaction that rolls back, then inside one that commits
    with pytest.raises(RolledBack), transaction.atomic():
        rolled_back = bus.dispatch(Ping(text="rolled back")).last(SentStamp)
        raise RolledBack
    with transaction.atomic():
        committed = bus.dispatch(Ping(text="committed")).last(SentStamp)
        # Then the message is written at the dispatch (not at the commit), unseen by others yet
        assert committed is not None and rolled_back is not None
        assert tables.states(committed.queue_name) == {}

    # Then only the committed one exists
    assert tables.states(committed.queue_name) == {committed.broker_message_id: "queued"}


def test_bus_dispatch_inside_a_transaction_raises_at_the_dispatch_when_refused(bound_to, tables):
    # Given the broker's tables gone: the INSERT fails
    tables.drop()

    with transaction.atomic():
        with pytest.raises(BrokerUnavailable):
            bus.dispatch(Ping(text="refused"))
        # Then the caller knows inside the block, and its transaction is still usable
        Effect.objects.create(handler="after", message_id=uuid.uuid4(), payload={})

    assert Effect.objects.filter(handler="after").exists()


class WriteAndDispatch(APIView):
    """A project's own view (not messenger's): it writes, then dispatches."""

    authentication_classes: list[Any] = []

    def post(self, request: Any) -> Response:
        Effect.objects.create(handler="view-write", message_id=uuid.uuid4(), payload={})
        bus.dispatch(Ping(text="from a view"))
        return Response(status=202)


def post_under_atomic_requests(monkeypatch: pytest.MonkeyPatch) -> Response:
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    view = BaseHandler().make_view_atomic(WriteAndDispatch.as_view())
    response: Response = view(APIRequestFactory().post("/write-and-dispatch/", {}, format="json"))
    return response


def test_an_own_view_under_atomic_requests_commits_its_write_and_its_message_together(
    bound_to, tables, monkeypatch
):
    response = post_under_atomic_requests(monkeypatch)

    assert response.status_code == 202
    assert Effect.objects.filter(handler="view-write").count() == 1
    assert list(tables.states("default").values()) == ["queued"]


def test_an_own_view_under_atomic_requests_whose_message_is_refused_answers_503_and_rolls_back(
    bound_to, tables, monkeypatch
):
    tables.drop()  # the INSERT fails

    response = post_under_atomic_requests(monkeypatch)

    # DRF's exception handler answers 503 and marks the request's transaction for rollback
    assert response.status_code == 503 and "Retry-After" in response
    assert not Effect.objects.filter(handler="view-write").exists()


# --- the deadline of the statement -------------------------------------------------------------------


def test_the_deadline_shuts_down_a_socket_still_waiting():
    waiting, silent = socket.socketpair()
    with waiting, silent:
        started = time.monotonic()
        with _Deadline(waiting.fileno(), 0.3) as deadline:
            data = waiting.recv(1)  # nothing ever comes: only the shutdown ends the wait
        elapsed = time.monotonic() - started

        assert data == b"" and deadline.fired
        assert 0.25 < elapsed < 3


def test_a_statement_done_in_time_is_never_cut():
    waiting, peer = socket.socketpair()
    with waiting, peer:
        peer.sendall(b"x")
        with _Deadline(waiting.fileno(), 0.2) as deadline:
            assert waiting.recv(1) == b"x"
        time.sleep(0.4)

        assert not deadline.fired
        peer.sendall(b"y")
        assert waiting.recv(1) == b"y"  # the socket still works


# --- the consumer -------------------------------------------------------------------------------------


def drain(consumer: Any, want: int, timeout: float = 10.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        item = next(consumer)
        if item is not None:
            got.append(item)
    return got


def test_an_undecodable_row_is_dead_lettered_and_the_rest_of_its_batch_delivered(pg, tables, caplog):
    # Given a batch with JSON that is not a message between two messages
    first = pg.enqueue(message(text="first"))
    bad = tables.put("q", '"not a message"')
    last = pg.enqueue(message(text="last"))

    consumer = pg.consume("q", prefetch=10)
    try:
        with caplog.at_level(logging.ERROR, logger="django_messenger"):
            delivered = drain(consumer, 2)
    finally:
        consumer.close()

    assert [m.message_id for m in delivered] == [first.message_id, last.message_id]
    assert tables.states("q")[bad] == "rejected"
    assert "is not a message" in caplog.text


def test_a_restarted_consumer_puts_back_the_rows_it_claimed_but_never_handed_out(pg, tables):
    # Given a consumer that claimed three rows and handed out one, then was dropped (a connection error)
    sent = [pg.enqueue(message(text=str(n))) for n in range(3)]
    old = pg.consume("q", prefetch=3)
    [handed_out] = drain(old, 1)
    old.buffer.clear()
    old.close()
    assert set(tables.states("q").values()) == {"consumed"}

    # When the worker starts its consumer again
    pg.consume("q", prefetch=3).requeue_stranded()

    # Then the two it never handed out are queued again; the one a thread holds stays claimed
    states = tables.states("q")
    assert states.pop(handed_out.message_id) == "consumed"
    assert states == {m.message_id: "queued" for m in sent if m.message_id != handed_out.message_id}


def test_a_restarted_delay_queue_consumer_puts_back_every_row_it_claimed(pg, tables):
    # Dramatiq drops the delayed messages it held when its consumer restarts
    sent = pg.enqueue(message(), delay=1)
    time.sleep(0.05)
    old = pg.consume("q.DQ")
    assert drain(old, 1)
    old.close()

    pg.consume("q.DQ").requeue_stranded()

    assert tables.states("q.DQ") == {sent.message_id: "queued"}


def test_an_acked_message_is_no_longer_held(pg, tables):
    pg.enqueue(message())
    consumer = pg.consume("q")
    try:
        [delivered] = drain(consumer, 1)
        assert pg.holding() == [delivered.message_id]
        consumer.ack(delivered)
    finally:
        consumer.close()

    assert pg.holding() == []
    assert tables.states("q") == {}


def test_a_message_whose_failure_was_not_kept_is_not_dead_lettered(pg, tables):
    # Given a delivered message whose failure messenger's middleware could neither store nor hold
    pg.enqueue(message())
    consumer = pg.consume("q")
    try:
        [delivered] = drain(consumer, 1)
        setattr(delivered, FAILURE_NOT_KEPT, True)

        # Then its rejection is refused (Dramatiq tries it again later), and it stays claimed
        with pytest.raises(BrokerConnectionError):
            consumer.nack(delivered)
        assert set(tables.states("q").values()) == {"consumed"}

        # Once kept, it is dead-lettered
        setattr(delivered, FAILURE_NOT_KEPT, False)
        consumer.nack(delivered)
    finally:
        consumer.close()
    assert set(tables.states("q").values()) == {"rejected"}
