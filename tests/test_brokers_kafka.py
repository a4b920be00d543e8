"""django_messenger.brokers.kafka without a server: the offset bookkeeping, sizes and bounded sends.

The broker on a real Kafka-protocol server (tansu) is in tests/integration/test_kafka.py and the
contract suite.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from dramatiq import Message, QueueNotFound
from dramatiq.errors import ConnectionClosed

from django_messenger.brokers.kafka import (
    KafkaBroker,
    MessageTooLargeForKafka,
    PartitionOffsets,
)
from django_messenger.exceptions import BrokerUnavailable, MessageTooLarge
from django_messenger.publishing import publish
from tests.tansu import free_port


def test_nothing_is_committable_before_anything_was_handed_out():
    assert PartitionOffsets("q", 0).committable() is None


def test_the_commit_stops_at_the_lowest_unfinished_offset():
    # Given offsets 10..14 handed out
    offsets = PartitionOffsets("q", 0)
    for offset in range(10, 15):
        offsets.add(offset)
    assert offsets.committable() == 10 and offsets.pending == 5

    # When later ones are done but not 10, Then the commit stays at 10
    for offset in (11, 13, 14):
        offsets.done(offset)
    assert offsets.committable() == 10 and offsets.pending == 2

    # When 10 is done, Then it moves up to 12, the next unfinished one
    offsets.done(10)
    assert offsets.committable() == 12 and offsets.pending == 1

    # When every offset is done, Then it is one past the last handed out (Kafka's next offset to read)
    offsets.done(12)
    assert offsets.committable() == 15 and offsets.pending == 0


def test_an_offset_already_committed_is_not_committed_again():
    offsets = PartitionOffsets("q", 0)
    offsets.add(0)
    offsets.add(1)
    offsets.done(0)
    assert offsets.committable() == 1
    offsets.committed(1)
    assert offsets.committable() is None  # nothing moved since
    offsets.done(1)
    assert offsets.committable() == 2


def test_an_offset_done_twice_counts_once():
    offsets = PartitionOffsets("q", 0)
    for offset in (0, 1, 2):
        offsets.add(offset)
    offsets.done(0)
    offsets.done(0)  # an ack repeated (Dramatiq retries a post-process that raised)
    assert offsets.pending == 2 and offsets.committable() == 1
    offsets.done(2)
    offsets.done(2)
    assert offsets.pending == 1 and offsets.committable() == 1


def test_acks_of_a_revoked_partition_change_nothing():
    offsets = PartitionOffsets("q", 3)
    offsets.add(5)
    offsets.revoked = True
    offsets.done(5)
    assert offsets.committable() == 5 and offsets.pending == 1


def test_acks_from_many_threads_in_any_order_end_one_past_the_last():
    # Given 2,000 offsets, done by 8 threads in a shuffled order
    offsets = PartitionOffsets("q", 0)
    every = list(range(2000))
    for offset in every:
        offsets.add(offset)
    random.Random(7).shuffle(every)
    finished: set[int] = set()  # an offset goes in before its done(): the broker cannot know more
    ahead: list[int] = []

    def work(chunk: list[int]) -> None:
        for n, offset in enumerate(chunk):
            finished.add(offset)
            offsets.done(offset)
            if n % 25 == 0:
                found = offsets.committable()
                if found is not None and not all(earlier in finished for earlier in range(found)):
                    ahead.append(found)

    threads = [threading.Thread(target=work, args=(every[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then no commit ever went past an offset not done yet, and all are done in the end
    assert ahead == []
    assert offsets.pending == 0 and offsets.committable() == 2000


def message(queue: str = "q", **options: object) -> Message[object]:
    return Message(queue_name=queue, actor_name="a", args=("x" * 100,), kwargs={}, options=dict(options))


def test_a_message_larger_than_max_message_size_is_a_413_and_nothing_is_sent():
    # No server on this port: the size is checked before anything is asked of Kafka
    broker = KafkaBroker(bootstrap_servers=f"127.0.0.1:{free_port()}", max_message_size=50, middleware=[])
    broker.declare_queue("q")
    with pytest.raises(MessageTooLargeForKafka) as raised:
        publish(broker, message())
    assert isinstance(raised.value, MessageTooLarge) and raised.value.limit == 50


def test_an_undeclared_queue_is_refused():
    broker = KafkaBroker(bootstrap_servers=f"127.0.0.1:{free_port()}", middleware=[])
    with pytest.raises(QueueNotFound):
        broker.enqueue(message("nowhere"))


def test_a_send_to_an_unreachable_kafka_fails_within_the_publish_timeout():
    # Given a broker whose bootstrap address has nothing listening
    broker = KafkaBroker(bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout=1.0, middleware=[])
    broker.declare_queue("q")

    # When a message is published, Then it is refused (a 503 upstream) within the timeout
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        publish(broker, message())
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.5, elapsed
    assert isinstance(raised.value.__cause__, ConnectionClosed)  # PublishFailed is one too


def test_the_producer_waits_for_every_replica_and_is_idempotent_unless_overridden():
    broker = KafkaBroker(middleware=[])
    assert broker.producer_config["acks"] == "all" and broker.producer_config["enable.idempotence"] is True
    assert broker.consumer_config["enable.auto.commit"] is False
    assert broker.consumer_config["enable.auto.offset.store"] is False
    assert broker.consumer_config["auto.offset.reset"] == "earliest"
    unsafe = KafkaBroker(producer_config={"acks": 1}, middleware=[])
    assert unsafe.producer_config["acks"] == 1


def test_the_publish_timeout_comes_from_messenger_settings_unless_given(settings):
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 2.5}
    assert KafkaBroker(middleware=[]).publish_timeout == 2.5
    assert KafkaBroker(publish_timeout=1, middleware=[]).producer_config["message.timeout.ms"] == 1000
