"""The stats readers of SQS (a real moto server of this module's) and PostgreSQL (the real test
database, in a schema of each test's own, dropped after).

Each test puts known numbers of messages on a queue of its own (ready, received by a consumer
and not acknowledged, delayed, dead-lettered) through the broker itself and reads the counts.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from dramatiq import Message
from dramatiq_postgres import init as init_schema

from django_messenger import stats
from django_messenger.brokers.postgres import PostgresBroker
from django_messenger.brokers.sqs import SQSBroker
from django_messenger.stats import postgres as postgres_reader
from django_messenger.stats import sqs as sqs_reader
from tests.moto import MotoServer

AWS = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}

pytestmark = pytest.mark.django_db(transaction=True)


def a_message(queue: str, n: int) -> Message[Any]:
    return Message(queue_name=queue, actor_name="stats-test", args=(n,), kwargs={}, options={})


def counts(found: stats.QueueStats) -> tuple[int | None, ...]:
    return (found.ready, found.in_flight, found.delayed, found.dead_lettered)


# --- SQS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def test_sqs_is_read_by_its_reader() -> None:
    broker = SQSBroker(endpoint_url="http://127.0.0.1:9", middleware=[], **AWS)
    assert stats.reader_for(broker) is sqs_reader


def test_sqs_counts_ready_in_flight_delayed_and_dead_lettered(moto: MotoServer) -> None:
    broker = SQSBroker(endpoint_url=moto.endpoint_url, middleware=[], namespace="stats", **AWS)
    queue = f"q{uuid.uuid4().hex[:10]}"
    broker.declare_queue(queue)
    # Given three messages sent, one of them received by a consumer and not deleted,
    for n in range(3):
        broker.enqueue(a_message(queue, n))
    client = broker.client()
    url = broker.queue_url(queue)
    received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=600)
    assert len(received["Messages"]) == 1
    # one delayed and two in the dead-letter queue
    broker.enqueue(a_message(queue, 3), delay=300_000)
    dead_letter_url = broker.dead_letter_url(queue)
    for body in ("one", "two"):
        client.send_message(QueueUrl=dead_letter_url, MessageBody=body)

    # When the stats are read, and a queue SQS does not have
    found = stats.queue_stats([queue, "never-sent"], broker=broker, timeout=10)

    # Then each column counts its own: 2 ready, 1 in flight, 1 delayed, 2 dead-lettered
    by_name = {q.queue: q for q in found}
    assert counts(by_name[queue]) == (2, 1, 1, 2)
    assert sqs_reader.APPROXIMATE_NOTE in by_name[queue].notes
    # and the missing queue is empty, said so, and was not created by reading it
    assert counts(by_name["never-sent"]) == (0, 0, 0, 0)
    assert sqs_reader.MISSING_NOTE in by_name["never-sent"].notes
    with pytest.raises(client.exceptions.QueueDoesNotExist):
        client.get_queue_url(QueueName="stats_never-sent")
    for each in (url, dead_letter_url):
        client.delete_queue(QueueUrl=each)


def test_an_unreachable_sqs_is_stats_unavailable_naming_no_host() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    broker = SQSBroker(endpoint_url=f"http://127.0.0.1:{port}", middleware=[], **AWS)
    with pytest.raises(stats.StatsUnavailable) as caught:
        stats.queue_stats(["default"], broker=broker, timeout=2)
    assert "127.0.0.1" not in str(caught.value) and str(port) not in str(caught.value)


def test_a_silent_sqs_is_stats_unavailable_within_the_timeout() -> None:
    with socket.socket() as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        broker = SQSBroker(endpoint_url=f"http://127.0.0.1:{port}", middleware=[], **AWS)
        started = time.monotonic()
        with pytest.raises(stats.StatsUnavailable) as caught:
            stats.queue_stats(["default", "other"], broker=broker, timeout=2)
        assert time.monotonic() - started < 2 + 5  # generous: a loaded machine
        assert str(port) not in str(caught.value)


# --- PostgreSQL ------------------------------------------------------------------------------------


def database_url() -> str:
    settings = connection.settings_dict
    return f"postgresql://{settings['USER']}@{settings['HOST']}:{settings['PORT'] or 5432}/{settings['NAME']}"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A dramatiq-postgres schema of this test's own in the test database, dropped after."""
    schema = f"messenger_stats_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url()) as server, server.cursor() as cursor:
        init_schema(cursor, schema=schema)
    yield schema
    with psycopg.connect(database_url(), autocommit=True) as server:
        server.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(schema)))


@pytest.fixture
def pg_broker(pg_schema: str) -> Iterator[PostgresBroker]:
    broker = PostgresBroker(url=database_url(), schema=pg_schema, middleware=[], listen=False)
    yield broker
    broker.close()


def test_postgres_is_read_by_its_reader(pg_broker: PostgresBroker) -> None:
    assert stats.reader_for(pg_broker) is postgres_reader
    assert postgres_reader.table_of(pg_broker) == (pg_broker.schema, "queue")


def test_postgres_counts_ready_in_flight_delayed_and_dead_lettered(pg_broker: PostgresBroker) -> None:
    queue = f"q{uuid.uuid4().hex[:10]}"
    pg_broker.declare_queue(queue)
    # Given four messages enqueued, one claimed by a consumer (in flight), one rejected by it
    for n in range(4):
        pg_broker.enqueue(a_message(queue, n))
    consumer = pg_broker.consume(queue, prefetch=2, timeout=1000)
    try:
        taken: list[Any] = []
        deadline = time.monotonic() + 30
        while len(taken) < 2 and time.monotonic() < deadline:
            message = next(consumer)  # None when nothing came within the consumer's timeout
            if message is not None:
                taken.append(message)
        assert len(taken) == 2
        consumer.nack(taken[1])
        # and two delayed
        pg_broker.enqueue(a_message(queue, 4), delay=300_000)
        pg_broker.enqueue(a_message(queue, 5), delay=300_000)

        # When the stats are read, with a queue that has no rows
        found = {q.queue: q for q in stats.queue_stats([queue, "empty"], broker=pg_broker, timeout=10)}

        # Then each column counts its own
        assert counts(found[queue]) == (2, 1, 2, 1)
        assert counts(found["empty"]) == (0, 0, 0, 0)
    finally:
        consumer.close()


def test_a_missing_queue_table_is_stats_unavailable(pg_schema: str) -> None:
    broker = PostgresBroker(url=database_url(), schema=pg_schema, prefix="nothing_", middleware=[])
    try:
        with pytest.raises(stats.StatsUnavailable, match="does not exist"):
            stats.queue_stats(["default"], broker=broker, timeout=5)
    finally:
        broker.close()


def test_an_unreachable_postgres_is_stats_unavailable_naming_no_host(pg_schema: str) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = connection.settings_dict
    url = f"postgresql://{settings['USER']}@127.0.0.1:{port}/{settings['NAME']}"
    broker = PostgresBroker(url=url, schema=pg_schema, middleware=[])
    try:
        with pytest.raises(stats.StatsUnavailable) as caught:
            stats.queue_stats(["default"], broker=broker, timeout=2)
    finally:
        broker.close()
    assert "127.0.0.1" not in str(caught.value) and str(port) not in str(caught.value)
