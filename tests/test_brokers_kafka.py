"""django_messenger.brokers.kafka without a server: the offset bookkeeping and commits, sizes, bounded
sends, topics a cluster refuses to create (a fake AdminClient), the producer's fatal errors and forks.

The broker on a real Kafka-protocol server (tansu) is in tests/integration/test_kafka.py and the
contract suite.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
import warnings
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from dramatiq import Message, QueueNotFound
from dramatiq.errors import ConnectionClosed

from django_messenger.brokers import kafka
from django_messenger.brokers.kafka import (
    KafkaBroker,
    KafkaConsumer,
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


# --- replication (finding: one replica is not crash-durable) ---------------------------------------


def test_topics_get_the_cluster_s_replication_factor_unless_given():
    assert KafkaBroker(middleware=[]).replication_factor == -1
    assert KafkaBroker(replication_factor=3, middleware=[]).replication_factor == 3
    for wrong in (0, -2):
        with pytest.raises(ValueError, match="replication_factor"):
            KafkaBroker(replication_factor=wrong, middleware=[])


# --- commits: recorded from Kafka's answer, one in flight, never backwards --------------------------


def test_a_commit_in_flight_is_not_offered_again_and_an_answer_records_it():
    offsets = PartitionOffsets("q", 0)
    for offset in (0, 1, 2):
        offsets.add(offset)
    offsets.done(0)
    offsets.requested(1)  # sent, not answered
    assert offsets.committable() is None and offsets.last_committed is None
    offsets.done(1)
    assert offsets.committable() == 2  # moved past what is in flight
    offsets.committed(1)
    assert offsets.last_committed == 1 and offsets.committable() == 2


def test_a_failed_commit_is_offered_again_and_an_older_answer_never_moves_the_record_back():
    offsets = PartitionOffsets("q", 0)
    for offset in (0, 1, 2):
        offsets.add(offset)
        offsets.done(offset)
    offsets.requested(3)
    offsets.commit_failed(3)
    assert offsets.committable() == 3  # sent again by the next commit
    offsets.requested(3)
    offsets.committed(3)
    offsets.committed(1)  # a late answer of an older commit
    assert offsets.last_committed == 3 and offsets.committable() is None
    offsets.commit_failed(1)  # a late failure of an older commit changes nothing either
    assert offsets.committable() is None


@pytest.fixture
def quick_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer's close() waits 0.2 s for Kafka's answer to its last commit, and 0.2 s to leave."""
    monkeypatch.setattr(kafka, "CLOSE_TIMEOUT", 0.2)
    monkeypatch.setattr(kafka, "CLOSE_LEAVE_MIN", 0.2)


def unreachable_consumer(queue: str = "q") -> tuple[KafkaBroker, KafkaConsumer, PartitionOffsets]:
    """A consumer of a Kafka nobody listens for, with partition 0 assigned by hand and offsets 0, 1 done."""
    broker = KafkaBroker(bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout=1.0, middleware=[])
    broker.declare_queue(queue)
    consumer = KafkaConsumer(broker, queue, prefetch=1, timeout=100)
    offsets = consumer.offsets[0] = PartitionOffsets(consumer.topic, 0)
    for offset in (0, 1):
        offsets.add(offset)
        offsets.done(offset)
    return broker, consumer, offsets


@pytest.mark.usefixtures("quick_close")
def test_a_commit_does_not_wait_for_kafka_and_only_its_answer_records_it():
    # Given a consumer whose group has no coordinator (nothing listens), with offsets 0 and 1 done
    _, consumer, offsets = unreachable_consumer()
    try:
        # When it commits, Then the call returns at once, with the commit in flight, not recorded
        started = time.monotonic()
        assert consumer.commit(force=True) is True
        assert time.monotonic() - started < 0.5
        assert offsets.last_committed is None and offsets.committable() is None

        # and no other commit is sent while it is in flight, even when more is done
        offsets.add(2)
        offsets.done(2)
        assert consumer.commit(force=True) is False

        # When Kafka answers, Then what it committed is recorded, and the next commit goes out
        consumer._on_commit(None, [TopicPartition(consumer.topic, 0, 2)])
        assert offsets.last_committed == 2 and offsets.committable() == 3
        assert consumer.commit(force=True) is True

        # When Kafka answers with an error, Then nothing is recorded and it is offered again
        consumer._on_commit(
            KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE), [TopicPartition(consumer.topic, 0, 3)]
        )
        assert offsets.last_committed == 2 and offsets.committable() == 3
    finally:
        consumer.close()


@pytest.mark.usefixtures("quick_close")
def test_a_partition_s_error_in_the_answer_leaves_that_partition_uncommitted():
    _, consumer, offsets = unreachable_consumer()
    other = consumer.offsets[1] = PartitionOffsets(consumer.topic, 1)
    other.add(7)
    other.done(7)
    try:
        assert consumer.commit(force=True) is True
        # (librdkafka's TopicPartition takes no error from Python: the answer's entry is built)
        failed = SimpleNamespace(
            topic=consumer.topic, partition=1, offset=8, error=KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
        )
        consumer._on_commit(None, [TopicPartition(consumer.topic, 0, 2), failed])  # type: ignore[list-item]
        assert offsets.last_committed == 2 and other.last_committed is None and other.committable() == 8
    finally:
        consumer.close()


def test_close_gives_up_on_a_commit_kafka_does_not_answer(monkeypatch, caplog):
    # Given a consumer with offsets done and no Kafka to commit them to (librdkafka would wait up
    # to session.timeout.ms, 45 s, for the commit), and bounds of 1 s and 0.5 s
    monkeypatch.setattr(kafka, "CLOSE_TIMEOUT", 1.0, raising=False)  # (absent before the fix)
    monkeypatch.setattr(kafka, "CLOSE_LEAVE_MIN", 0.5, raising=False)
    _, consumer, offsets = unreachable_consumer()

    # When it closes (as Dramatiq's worker does on SIGTERM), in a thread we can wait for
    closer = threading.Thread(target=consumer.close, daemon=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="django_messenger"):
        closer.start()
        closer.join(20)

    # Then it returned after the bounds, saying the offsets will be read again
    assert not closer.is_alive(), "close() hangs while Kafka does not answer the commit"
    assert time.monotonic() - started < 1.0 + 0.5 + 1.5
    assert offsets.last_committed is None
    said = [record.getMessage() for record in caplog.records]
    assert any("duplicates" in text for text in said) and any("background" in text for text in said)


# --- topics a cluster may not create (ACLs, policies) -----------------------------------------------


class FakeAdmin:
    """An AdminClient whose CreateTopics answers ``codes`` (topic -> KafkaError code) and whose
    metadata lists ``existing``; it records the timeouts it was given."""

    def __init__(self, codes: dict[str, int], existing: set[str]) -> None:
        self.codes = codes
        self.existing = existing
        self.asked_to_create: list[str] = []
        self.timeouts: list[float] = []
        self.listed = 0

    def create_topics(self, new, operation_timeout, request_timeout):
        self.timeouts += [operation_timeout, request_timeout]
        futures = {}
        for topic in new:
            self.asked_to_create.append(topic.topic)
            future: Future[None] = Future()
            code = self.codes.get(topic.topic)
            if code is None:
                future.set_result(None)
            else:
                future.set_exception(KafkaException(KafkaError(code)))
            futures[topic.topic] = future
        return futures

    def list_topics(self, topic=None, timeout=-1):
        assert topic is None  # a request naming a topic may auto-create it
        self.listed += 1
        self.timeouts.append(timeout)
        return SimpleNamespace(topics={name: SimpleNamespace(error=None) for name in self.existing})


def broker_with_admin(monkeypatch, admin: FakeAdmin, **options) -> KafkaBroker:
    monkeypatch.setattr(kafka, "AdminClient", lambda config: admin)
    broker = KafkaBroker(
        bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout=2.0, middleware=[], **options
    )
    broker.declare_queue("q")
    return broker


TOPICS = {"q", "q.DQ", "q.DLQ"}


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.POLICY_VIOLATION,
    ],
)
def test_topics_the_cluster_refuses_to_create_are_used_when_they_exist(monkeypatch, code):
    # Given a cluster that refuses CreateTopics even for the topics that exist
    admin = FakeAdmin({name: code for name in TOPICS}, existing=TOPICS | {"other"})
    broker = broker_with_admin(monkeypatch, admin)

    # When the queue's topics are ensured, Then they are accepted, within the publish timeout
    broker.ensure_topics("q")
    assert admin.listed == 1 and all(0 < t <= 2.0 for t in admin.timeouts)

    # and not asked for again by this process
    broker.ensure_topics("q")
    assert admin.listed == 1 and len(admin.asked_to_create) == 3


def test_a_refused_topic_that_does_not_exist_is_a_503_naming_it(monkeypatch):
    admin = FakeAdmin(
        {name: KafkaError.TOPIC_AUTHORIZATION_FAILED for name in TOPICS}, existing={"q", "q.DQ"}
    )
    broker = broker_with_admin(monkeypatch, admin)
    with pytest.raises(ConnectionClosed, match=r"q\.DLQ"):
        broker.ensure_topics("q")
    with pytest.raises(BrokerUnavailable):  # what a view answers 503 to
        publish(broker, message())


def test_topics_that_exist_already_or_were_created_need_no_metadata(monkeypatch):
    admin = FakeAdmin({"q": KafkaError.TOPIC_ALREADY_EXISTS}, existing=set())
    broker_with_admin(monkeypatch, admin).ensure_topics("q")
    assert admin.listed == 0


def test_other_creation_errors_are_not_taken_for_existing_topics(monkeypatch):
    admin = FakeAdmin({"q.DQ": KafkaError.INVALID_REPLICATION_FACTOR}, existing=TOPICS)
    with pytest.raises(ConnectionClosed):
        broker_with_admin(monkeypatch, admin).ensure_topics("q")
    assert admin.listed == 0


def test_with_create_topics_off_the_broker_only_checks_that_they_exist(monkeypatch):
    admin = FakeAdmin({}, existing={"q", "q.DQ"})
    broker = broker_with_admin(monkeypatch, admin, create_topics=False)
    with pytest.raises(ConnectionClosed, match=r"q\.DLQ"):
        broker.ensure_topics("q")
    admin.existing = set(TOPICS)
    broker.ensure_topics("q")
    assert admin.asked_to_create == [] and admin.listed == 2


# --- the producer: a fatal error drops its own producer only; a fork keeps the inherited one --------


def recording_producers(monkeypatch) -> list[dict[str, Any]]:
    """The configurations of the producers the broker makes from now on."""
    configs: list[dict[str, Any]] = []

    def make(config: dict[str, Any]) -> Producer:
        configs.append(config)
        return Producer(config)

    monkeypatch.setattr(kafka, "Producer", make)
    return configs


def test_a_late_fatal_error_of_an_old_producer_leaves_the_current_one(monkeypatch):
    # Given producer A, replaced by B after a refused send
    configs = recording_producers(monkeypatch)
    broker = KafkaBroker(bootstrap_servers=f"127.0.0.1:{free_port()}", middleware=[])
    first = broker.producer
    broker._discard_producer(first)
    second = broker.producer
    assert second is not first and len(configs) == 2

    # When A's fatal-error callback comes late, Then B stays the producer
    fatal = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
    configs[0]["error_cb"](fatal)
    assert broker.producer is second and len(configs) == 2

    # When B's own fatal error comes, Then B is dropped and the next send makes C
    configs[1]["error_cb"](fatal)
    assert broker.producer is not second and len(configs) == 3
    broker.close()


def test_a_forked_child_keeps_the_inherited_producer_and_makes_its_own():
    # Given a broker whose producer exists (librdkafka's threads run in this process)
    broker = KafkaBroker(bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout=0.5, middleware=[])
    inherited = broker.producer

    # When the process forks, and the child sends (makes a producer) and closes the broker
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12: fork of a threaded process
        pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            kept = any(p is inherited for p in kafka.INHERITED_PRODUCERS)
            own = broker.producer
            broker.close()
            code = 0 if kept and own is not inherited else 2
        finally:
            os._exit(code)

    # Then the child kept the inherited producer referenced, made its own, and exited in time
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not exit: its broker hung")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
    assert broker.producer is inherited  # the parent's is untouched
    broker.close()


@pytest.mark.usefixtures("quick_close")
def test_a_late_answer_of_a_commit_given_up_on_does_not_settle_the_one_in_flight():
    _, consumer, offsets = unreachable_consumer()
    try:
        assert consumer.commit(force=True) is True  # offset 2 in flight
        offsets.add(2)
        offsets.done(2)
        # An answer about offset 1 (a commit given up on after COMMIT_STALL) leaves 2 in flight
        consumer._on_commit(None, [TopicPartition(consumer.topic, 0, 1)])
        assert offsets.last_committed == 1 and consumer.commit(force=True) is False
        consumer._on_commit(None, [TopicPartition(consumer.topic, 0, 2)])
        assert offsets.last_committed == 2 and consumer.commit(force=True) is True
    finally:
        consumer.close()
