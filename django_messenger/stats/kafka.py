"""The reader of messenger's KafkaBroker: what each queue's consumer group has not committed yet.

Kafka keeps no count of a topic's messages by state: it has each partition's first and next
offsets (its low and high watermarks) and each consumer group's committed offset. So, per queue:

* ready: the records of ``<queue>`` past its group's committed offsets (or past the low
  watermark, for a partition the group never committed). The broker commits only what is
  done, so messages a worker holds and has not finished count here too: in flight is ``None``.
* delayed: the same count on ``<queue>.DQ`` (workers hold a delayed message uncommitted until due).
* dead-lettered: every record of ``<queue>.DLQ`` (high less low watermark).

The reader asks with a consumer of each group that joins nothing (``committed()`` and
``get_watermark_offsets()`` only), every call bounded by the time left of the timeout; it never
creates a topic (a topic Kafka does not have is counted as empty, with a note). On tansu 0.6.0 a
partition's high watermark counts a batch of several records as one (docs/transports.md): its
counts are low when records were sent in batches.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from dramatiq.common import dq_name

from . import QueueStats, StatsUnavailable

#: The note of every Kafka queue's counts.
UNCOMMITTED_NOTE = "ready counts what the group has not committed, messages being handled included"
#: The note of a queue whose topic Kafka does not have.
MISSING_NOTE = "not created on Kafka yet"


class _Reader:
    def __init__(self, broker: Any, timeout: float) -> None:
        self.broker = broker
        self.deadline = time.monotonic() + timeout
        self.consumers: dict[str, Any] = {}

    def left(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise StatsUnavailable("Kafka did not answer in time.")
        return remaining

    def consumer(self, group: str) -> Any:
        found = self.consumers.get(group)
        if found is None:
            config = {
                key: value
                for key, value in self.broker.consumer_config.items()
                if key not in {"error_cb", "on_commit"}
            }
            found = Consumer({**config, "group.id": group, "enable.auto.commit": False})
            self.consumers[group] = found
        return found

    def partitions(self, consumer: Any, topic: str) -> list[TopicPartition] | None:
        metadata = consumer.list_topics(topic, timeout=self.left()).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return None
        return [TopicPartition(topic, p) for p in sorted(metadata.partitions)]

    def uncommitted(self, queue_name: str) -> int | None:
        """Records of ``queue_name``'s topic past its group's committed offsets; None without the topic."""
        topic = self.broker.topic(queue_name)
        consumer = self.consumer(self.broker.consumer_group(queue_name))
        partitions = self.partitions(consumer, topic)
        if partitions is None:
            return None
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=self.left())}
        total = 0
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=self.left(), cached=False)
            start = committed.get(tp.partition, -1)
            total += max(0, high - (start if start >= 0 else low))
        return total

    def records(self, topic: str) -> int | None:
        consumer = self.consumer(f"{self.broker.group_id}.stats")
        partitions = self.partitions(consumer, topic)
        if partitions is None:
            return None
        total = 0
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=self.left(), cached=False)
            total += max(0, high - low)
        return total

    def close(self) -> None:
        for consumer in self.consumers.values():
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()


def read(broker: Any, queues: Sequence[str], *, timeout: float) -> list[QueueStats]:
    reader = _Reader(broker, timeout)
    found: list[QueueStats] = []
    try:
        for queue in queues:
            ready = reader.uncommitted(queue)
            if ready is None:
                found.append(QueueStats(queue, 0, None, 0, 0, notes=(MISSING_NOTE,)))
                continue
            delayed = reader.uncommitted(dq_name(queue))
            dead = reader.records(broker.dead_letter_topic(queue))
            found.append(
                QueueStats(
                    queue=queue,
                    ready=ready,
                    in_flight=None,
                    delayed=delayed or 0,
                    dead_lettered=dead or 0,
                    notes=(UNCOMMITTED_NOTE,),
                )
            )
    except KafkaException as exc:
        # librdkafka's texts name the brokers' addresses: only the kind of error is shown.
        error = exc.args[0] if exc.args else None
        kind = error.name() if isinstance(error, KafkaError) else type(exc).__name__
        raise StatsUnavailable(f"Kafka did not answer ({kind}).") from exc
    finally:
        reader.close()
    return found
