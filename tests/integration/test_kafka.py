"""django_messenger.brokers.kafka on a real Kafka-protocol server (tansu, tests/tansu.py).

The consumer's bookkeeping as Kafka sees it (committed offsets, paused partitions, dead letters,
keys, a partition moved to another consumer), and the plain-Dramatiq example of
docs/transports.md run as its own process without Django. The broker under messenger's
processes is in the contract suite.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from dramatiq import Message
from dramatiq.errors import BrokerConnectionError, ConnectionClosed

from django_messenger.brokers.kafka import KafkaBroker, KafkaConsumer, KafkaMessage
from django_messenger.exceptions import BrokerUnavailable
from django_messenger.publishing import publish
from tests.faultproxy import FaultProxy
from tests.tansu import TansuServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tansu() -> Iterator[TansuServer]:
    server = TansuServer().start_or_skip()
    yield server
    server.stop()


def make_broker(
    tansu: TansuServer, partitions: int = 1, *, publish_timeout: float = 10, **options: Any
) -> KafkaBroker:
    return KafkaBroker(
        bootstrap_servers=tansu.bootstrap,
        partitions=partitions,
        replication_factor=1,  # tansu is one broker (the docs' example below runs the default, -1)
        session_timeout_ms=6000,
        publish_timeout=publish_timeout,
        middleware=[],
        **options,
    )


def new_queue(broker: KafkaBroker) -> str:
    queue = f"kafka-{uuid.uuid4().hex[:10]}"
    broker.declare_queue(queue)
    return queue


def send(broker: KafkaBroker, queue: str, n: int, **options: Any) -> list[str]:
    ids = []
    for index in range(n):
        message = Message(queue_name=queue, actor_name="a", args=(index,), kwargs={}, options=dict(options))
        ids.append(broker.enqueue(message).message_id)
    return ids


def take(consumer: KafkaConsumer, n: int, timeout: float = 30) -> list[KafkaMessage]:
    """The next ``n`` messages the consumer hands out (failing after ``timeout`` s)."""
    taken: list[KafkaMessage] = []
    deadline = time.monotonic() + timeout
    while len(taken) < n:
        assert time.monotonic() < deadline, f"only {len(taken)} of {n} messages came"
        message = next(consumer)
        if message is not None:
            taken.append(message)
    return taken


def committed(consumer: KafkaConsumer, partition: int = 0) -> int:
    found = consumer.consumer.committed([TopicPartition(consumer.topic, partition)], timeout=10)
    return int(found[0].offset)


def read_topic(tansu: TansuServer, topic: str, *, quiet: float = 1.0) -> list[Any]:
    """Every record of ``topic``, from the start of each partition (no group, nothing committed)."""
    reader = Consumer(
        {"bootstrap.servers": tansu.bootstrap, "group.id": "inspect", "enable.auto.commit": False}
    )
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, 0) for p in partitions])
        records, last = [], time.monotonic()
        while time.monotonic() - last < quiet:
            batch = [r for r in reader.consume(100, 0.2) if r.error() is None]
            if batch:
                records.extend(batch)
                last = time.monotonic()
        return records
    finally:
        reader.close()


def test_commits_stop_at_the_lowest_unfinished_offset_and_the_prefetch_pauses(tansu):
    # Given twelve messages on a one-partition queue, and a consumer with a prefetch of two
    broker = make_broker(tansu)
    queue = new_queue(broker)
    send(broker, queue, 12)
    consumer = broker.consume(queue, prefetch=2, timeout=300)
    try:
        first, second = take(consumer, 2)
        assert (first._offset, second._offset) == (0, 1)

        # Then no third message comes while both are out, and once its buffer of fetched
        # messages is full (4 x the prefetch) the consumer pauses the partition
        for _ in range(5):
            assert next(consumer) is None
        assert len(consumer.buffer) >= consumer.buffer_size == 8
        assert consumer.paused == {0}

        # When the second is acked but not the first, Then nothing past the first is committed
        consumer.ack(second)
        third = take(consumer, 1)[0]  # room for one more
        assert third._offset == 2
        assert consumer.flush_commits(10)  # Kafka answered every commit sent
        assert committed(consumer) in (0, -1001)  # -1001: nothing committed yet

        # When the first is acked, Then the commit moves past both, up to the third (unfinished)
        consumer.ack(first)
        assert consumer.flush_commits(10)
        assert committed(consumer) == 2 == consumer.offsets[0].last_committed
        consumer.ack(third)
        assert consumer.flush_commits(10)
        assert committed(consumer) == 3 == consumer.offsets[0].last_committed
    finally:
        consumer.close()


def test_a_nack_is_in_the_dead_letter_topic_before_its_offset_is_done(tansu):
    broker = make_broker(tansu)
    queue = new_queue(broker)
    (message_id,) = send(broker, queue, 1)
    consumer = broker.consume(queue, prefetch=1, timeout=300)
    try:
        (message,) = take(consumer, 1)
        consumer.nack(message)
        assert consumer.flush_commits(10)
        assert committed(consumer) == 1
    finally:
        consumer.close()
    (record,) = read_topic(tansu, f"{queue}.DLQ")
    assert record.value() == message._value
    assert Message.decode(record.value()).message_id == message_id
    assert ("dramatiq-dead-lettered", b"rejected") in record.headers()


def test_messages_of_one_key_go_to_one_partition_in_order(tansu):
    broker = make_broker(tansu, partitions=6)
    queue = new_queue(broker)
    ids = send(broker, queue, 8, kafka_key="order-42")
    records = read_topic(tansu, queue)
    assert [Message.decode(r.value()).message_id for r in records] == ids
    assert len({r.partition() for r in records}) == 1
    assert {r.key() for r in records} == {b"order-42"}


def test_a_revoked_partition_s_unfinished_message_goes_to_its_next_owner(tansu):
    # Given a consumer that holds message 0 (not done) and acked message 1
    broker = make_broker(tansu)
    queue = new_queue(broker)
    send(broker, queue, 3)
    first = broker.consume(queue, prefetch=2, timeout=300)
    second: KafkaConsumer | None = None
    try:
        held, acked = take(first, 2)
        first.ack(acked)

        # When it leaves the group (as a stopping or crashed worker's consumer does)
        first.close()
        first.ack(held)  # an ack after the partition went away changes nothing

        # Then the next owner starts at the unfinished message, and the commit never passed it
        second = broker.consume(queue, prefetch=5, timeout=300)
        again = take(second, 3)
        assert [m._offset for m in again] == [0, 1, 2]
        assert again[0].message_id == held.message_id
    finally:
        first.close()
        if second is not None:
            second.close()


def test_the_plain_dramatiq_example_of_the_docs_runs_without_django(tansu, tmp_path):
    # Given the example of docs/transports.md, as a program of its own
    text = (ROOT / "docs" / "transports.md").read_text()
    found = re.search(r"<!-- kafka-example -->\n```python\n(.*?)```", text, re.S)
    assert found, "the example is missing from docs/transports.md"
    program = tmp_path / "kafka_example.py"
    program.write_text(found.group(1))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(KAFKA_BOOTSTRAP=tansu.bootstrap, PYTHONPATH=str(ROOT))

    # When it runs, Then every message is handled, the delayed one included
    ran = subprocess.run(
        [sys.executable, str(program)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip().splitlines()[-1] == "shipped [1, 2, 3, 4]"


def test_messenger_stats_reads_what_each_group_has_not_committed(tansu):
    from django_messenger import stats
    from django_messenger.stats import kafka as kafka_reader

    # Given a queue with three messages (one sent at a time: tansu's watermarks count a batch as
    # one record) and a delayed one, of which a consumer acked one and dead-lettered another
    broker = make_broker(tansu, partitions=2)
    queue = new_queue(broker)
    send(broker, queue, 3)
    broker.enqueue(Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options={}), delay=600_000)
    consumer = broker.consume(queue, prefetch=2, timeout=300)
    try:
        acked, nacked = take(consumer, 2)
        consumer.ack(acked)
        consumer.nack(nacked)
        assert consumer.flush_commits(10)
    finally:
        consumer.close()

    # When messenger_stats reads it (and a queue that has no topic yet)
    assert stats.reader_for(broker) is kafka_reader
    found = stats.queue_stats([queue, "never-sent"], broker=broker, timeout=10)

    # Then the queue has one message left, one delayed and one dead letter; in flight is unknown
    by_queue = {row.queue: row for row in found}
    counts = by_queue[queue]
    assert (counts.ready, counts.in_flight, counts.delayed, counts.dead_lettered) == (1, None, 1, 1)
    assert by_queue["never-sent"].notes == (kafka_reader.MISSING_NOTE,)


def test_a_partition_moved_to_a_joining_consumer_is_revoked_and_its_unfinished_message_read_again(tansu):
    # Given a consumer that owns both partitions of a queue, with the first message of each
    # partition not done and the others done
    broker = make_broker(tansu, partitions=2)
    queue = new_queue(broker)
    for key in ("a", "b", "c", "d", "e", "f"):  # keys spread the messages over both partitions
        send(broker, queue, 1, kafka_key=key)
    first = broker.consume(queue, prefetch=6, timeout=300)
    second: KafkaConsumer | None = None
    try:
        held = take(first, 6)
        assert {m._offsets.partition for m in held} == {0, 1}
        unfinished = {
            p: min((m for m in held if m._offsets.partition == p), key=lambda m: m._offset) for p in (0, 1)
        }
        for message in held:
            if message not in unfinished.values():
                first.ack(message)

        # When a second consumer joins the group, and both keep polling
        second = broker.consume(queue, prefetch=6, timeout=300)
        got: list[KafkaMessage] = []
        deadline = time.monotonic() + 60
        while len(first.offsets) != 1 or not got:
            assert time.monotonic() < deadline, f"no rebalance: {sorted(first.offsets)}"
            next(first)
            message = next(second)
            if message is not None:
                got.append(message)

        # Then the first gave one partition up, and the second reads it from its unfinished message
        (moved,) = {0, 1} - set(first.offsets)
        assert set(second.offsets) == {moved}
        assert got[0].message_id == unfinished[moved].message_id
        assert committed(second, moved) == unfinished[moved]._offset
        # and an ack of the moved message on the first consumer, afterwards, changes nothing
        first.ack(unfinished[moved])
        assert first.flush_commits(10)
        assert committed(second, moved) == unfinished[moved]._offset
    finally:
        first.close()
        if second is not None:
            second.close()


@contextlib.contextmanager
def tansu_behind_a_proxy() -> Iterator[tuple[TansuServer, FaultProxy]]:
    """A tansu of the test's own, reached only through a FaultProxy (it advertises the proxy's port)."""
    server = TansuServer()
    with FaultProxy(upstream=("127.0.0.1", server.port)) as proxy:
        server.advertised_port = proxy.port
        server.start_or_skip()
        try:
            yield server, proxy
        finally:
            server.stop()


def test_a_nack_kafka_does_not_take_leaves_the_offset_unfinished():
    with tansu_behind_a_proxy() as (server, proxy):
        # Given a broker whose sends wait 1 s (librdkafka's message.timeout.ms too), and a message
        broker = make_broker(server, publish_timeout=1)
        assert broker.producer_config["message.timeout.ms"] == 1000
        queue = new_queue(broker)
        broker.ensure_topics(queue, timeout=10)
        send(broker, queue, 1)
        consumer = broker.consume(queue, prefetch=1, timeout=300)
        try:
            (message,) = take(consumer, 1)

            # When Kafka goes silent and the message is nacked
            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises(BrokerConnectionError):  # Dramatiq tries the nack again later
                consumer.nack(message)

            # Then the nack failed within the publish timeout, and its offset is not done
            assert time.monotonic() - started < 1.0 + 0.5
            assert message._offsets.pending == 1 and message._offsets.committable() == 0

            # When Kafka is back, Then the nack goes through (as Dramatiq tries it again) and the
            # offset is done
            proxy.restore()
            attempts, deadline = 0, time.monotonic() + 20
            while True:
                attempts += 1
                try:
                    consumer.nack(message)
                    break
                except BrokerConnectionError:
                    assert time.monotonic() < deadline, "the nack never went through once Kafka was back"
            assert message._offsets.pending == 0 and message._offsets.committable() == 1
        finally:
            consumer.close()

        # and the dead-letter topic has no more records than nacks tried since Kafka came back
        # (one, unless the machine is slow): the refused attempt was not delivered later from
        # librdkafka's queue (with message.timeout.ms longer than the publish timeout, it was)
        dead = read_topic(server, f"{queue}.DLQ", quiet=2.0)
        assert 1 <= len(dead) <= attempts, (len(dead), attempts)


def test_a_first_send_while_kafka_is_silent_fails_within_the_publish_timeout():
    with tansu_behind_a_proxy() as (server, proxy):
        # Given a Kafka that went silent before any topic of the queue exists
        broker = make_broker(server, publish_timeout=1)
        queue = new_queue(broker)
        proxy.blackhole()

        # When a message is published (the topics are created first), Then it is a 503 within 1 s
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            publish(broker, Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options={}))
        assert time.monotonic() - started < 1.0 + 0.5

        # When Kafka is back, Then a send creates the topics and goes through
        proxy.restore()
        sent = Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options={})
        deadline = time.monotonic() + 20
        while True:
            try:
                publish(broker, sent)
                break
            except BrokerUnavailable:
                assert time.monotonic() < deadline, "no send went through once Kafka was back"
        # (a send the loop tried again may be stored twice: at-least-once, nothing else)
        assert {Message.decode(r.value()).message_id for r in read_topic(server, queue)} == {sent.message_id}
        broker.close()


def test_with_create_topics_off_a_queue_is_refused_until_its_topics_exist(tansu):
    # Given a broker that may not create topics, and a queue whose topics nobody created
    broker = make_broker(tansu, create_topics=False)
    queue = new_queue(broker)

    # When a message is sent, Then it is refused, naming the missing topics
    with pytest.raises(ConnectionClosed, match="do not exist"):
        send(broker, queue, 1)

    # When the operator creates them (here, a broker that may), Then sends go through
    operator = make_broker(tansu)
    operator.declare_queue(queue)
    operator.ensure_topics(queue)
    (message_id,) = send(broker, queue, 1)
    assert [Message.decode(r.value()).message_id for r in read_topic(tansu, queue)] == [message_id]
