"""django_messenger.brokers.sqs: what it fixes in dramatiq-sqs 0.4.4, against a moto server.

moto's SQS runs as its own process on a free loopback port (tests/moto.py), started once for
this module; each test uses queues of its own.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from base64 import b64decode, b64encode
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.middleware import TimeLimit
from dramatiq_sqs import MessageDelayTooLong

from django_messenger.brokers.sqs import (
    DEAD_LETTER_SUFFIX,
    MAX_VISIBILITY_TIMEOUT_SECONDS,
    VISIBILITY_MARGIN,
    MessageTooLargeForSQS,
    SQSBroker,
    delay_seconds,
    largest_envelope,
)
from django_messenger.dramatiq_encoder import OPTIONS_ALLOWANCE
from django_messenger.exceptions import BrokerUnavailable, MessageTooLarge
from django_messenger.publishing import publish
from tests.moto import MotoServer

AWS = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def make_broker(moto: MotoServer) -> Any:
    def make(**options: Any) -> SQSBroker:
        options.setdefault("middleware", [])
        broker = SQSBroker(endpoint_url=moto.endpoint_url, **AWS, **options)
        broker.declare_queue(queue := f"q{uuid.uuid4().hex[:10]}")
        broker.test_queue = queue  # type: ignore[attr-defined]
        return broker

    return make


def message(queue: str, **options: Any) -> Message[Any]:
    return Message(queue_name=queue, actor_name="an_actor", args=({"n": 1},), kwargs={}, options=options)


def attributes(broker: SQSBroker, url: str, *names: str) -> dict[str, str]:
    found: dict[str, str] = broker.client().get_queue_attributes(QueueUrl=url, AttributeNames=list(names))[
        "Attributes"
    ]
    return found


# --- no network needed ----------------------------------------------------------------------------


@pytest.mark.parametrize(("ms", "seconds"), [(None, 0), (0, 0), (1, 1), (1000, 1), (1500, 2), (900_000, 900)])
def test_delays_are_rounded_up_to_whole_seconds(ms: int | None, seconds: int) -> None:
    assert delay_seconds(ms) == seconds


def test_the_largest_envelope_fits_once_base64_encoded() -> None:
    # An envelope of largest_envelope() bytes, with a Dramatiq message's room around it, fits
    limit = 1024 * 1024
    assert len(b64encode(b"x" * (largest_envelope(limit) + OPTIONS_ALLOWANCE))) <= limit
    assert len(b64encode(b"x" * (largest_envelope(limit) + OPTIONS_ALLOWANCE + 3))) > limit


def test_a_message_larger_than_sqs_takes_is_a_413_not_a_503() -> None:
    # Given a broker whose endpoint nothing listens on: the size is checked before any network
    broker = SQSBroker(endpoint_url="http://127.0.0.1:9", middleware=[], max_message_size=2048, **AWS)
    broker.declare_queue("big")
    too_large = message("big", padding="x" * 2048)

    with pytest.raises(MessageTooLarge) as raised:
        publish(broker, too_large)

    assert isinstance(raised.value, MessageTooLargeForSQS)
    assert raised.value.status_code == 413 and raised.value.limit == 2048
    assert "base64" in raised.value.reason


def test_a_delay_over_15_minutes_is_refused() -> None:
    broker = SQSBroker(endpoint_url="http://127.0.0.1:9", middleware=[], **AWS)
    broker.declare_queue("later")

    with pytest.raises(MessageDelayTooLong):
        broker.enqueue(message("later"), delay=900_001)


def test_each_thread_has_its_own_client() -> None:
    broker = SQSBroker(endpoint_url="http://127.0.0.1:9", middleware=[], **AWS)
    mine = broker.client()
    theirs: list[Any] = []
    thread = threading.Thread(target=lambda: theirs.append(broker.client()))
    thread.start()
    thread.join()

    assert broker.client() is mine
    assert theirs[0] is not mine
    assert theirs[0]._endpoint.host == mine._endpoint.host == "http://127.0.0.1:9"


def test_a_send_is_bounded_by_publish_timeout(settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "PUBLISH_TIMEOUT": 1.0}
    broker = SQSBroker(endpoint_url="http://127.0.0.1:9", middleware=[], **AWS)

    config = broker.client().meta.config

    assert config.connect_timeout + config.read_timeout <= 1.0
    assert config.retries["total_max_attempts"] == 1


def test_a_silent_server_is_a_broker_unavailable_within_publish_timeout(settings: Any) -> None:
    # Given a server that accepts connections and never answers
    settings.MESSENGER = {**settings.MESSENGER, "PUBLISH_TIMEOUT": 1.0}
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        broker = SQSBroker(endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}", middleware=[], **AWS)
        broker.declare_queue("silent")

        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            publish(broker, message("silent"))
        elapsed = time.monotonic() - started

    assert elapsed < 1.0 + 1.0, f"refused after {elapsed:.2f}s"


def test_the_visibility_timeout_comes_from_the_time_limit() -> None:
    broker = SQSBroker(endpoint_url="http://127.0.0.1:9", middleware=[TimeLimit(time_limit=60_000)], **AWS)

    @dramatiq.actor(broker=broker, queue_name="slow", time_limit=300_000)
    def slow() -> None: ...

    @dramatiq.actor(broker=broker, queue_name="quick")
    def quick() -> None: ...

    # Twice the longest time limit of the queue (a message may wait behind one running), plus a margin
    assert broker.visibility_timeout_for("slow") == 2 * 300 + VISIBILITY_MARGIN
    assert broker.visibility_timeout_for("quick") == 2 * 60 + VISIBILITY_MARGIN
    assert broker.consume("slow").visibility_timeout == 2 * 300 + VISIBILITY_MARGIN


def test_an_explicit_visibility_timeout_wins_and_no_time_limit_means_sqs_maximum() -> None:
    explicit = SQSBroker(
        endpoint_url="http://127.0.0.1:9", middleware=[TimeLimit()], visibility_timeout=7, **AWS
    )
    unbounded = SQSBroker(endpoint_url="http://127.0.0.1:9", middleware=[], **AWS)

    assert explicit.visibility_timeout_for("any") == 7
    assert unbounded.visibility_timeout_for("any") == MAX_VISIBILITY_TIMEOUT_SECONDS


# --- against moto's SQS ---------------------------------------------------------------------------


def test_queues_are_created_with_a_dead_letter_queue_and_a_redrive_policy(make_broker: Any) -> None:
    broker = make_broker(max_receives=3, max_message_size=256 * 1024)

    url = broker.queue_url(broker.test_queue)

    dead_letter_url = broker.dead_letter_url(broker.test_queue)
    assert dead_letter_url.endswith(broker.test_queue + DEAD_LETTER_SUFFIX)
    found = attributes(broker, url, "RedrivePolicy", "MaximumMessageSize")
    policy = json.loads(found["RedrivePolicy"])
    assert policy["maxReceiveCount"] == 3
    assert policy["deadLetterTargetArn"] == attributes(broker, dead_letter_url, "QueueArn")["QueueArn"]
    assert found["MaximumMessageSize"] == str(256 * 1024)


def test_a_message_received_too_often_is_dead_lettered_by_sqs(make_broker: Any) -> None:
    # Given a message whose worker dies each time it gets it (it is never acknowledged)
    broker = make_broker(max_receives=2, visibility_timeout=1)
    broker.enqueue(sent := message(broker.test_queue))
    consumer = broker.consume(broker.test_queue, prefetch=1, timeout=1000)
    for _ in range(2):
        received = next(consumer)
        assert received is not None and received.message_id == sent.message_id
        consumer.message_refc = 0  # the worker that held it is gone
        time.sleep(1.2)

    # Then SQS moves it to the dead-letter queue instead of handing it out a third time
    assert next(consumer) is None
    dead_letter_url = broker.dead_letter_url(broker.test_queue)
    assert (
        attributes(broker, dead_letter_url, "ApproximateNumberOfMessages")["ApproximateNumberOfMessages"]
        == "1"
    )


def test_ack_deletes_and_nack_dead_letters_the_body_as_it_was(make_broker: Any) -> None:
    broker = make_broker()
    queue = broker.test_queue
    broker.enqueue(first := message(queue))
    broker.enqueue(second := message(queue))
    consumer = broker.consume(queue, prefetch=2, timeout=1000)
    received = {m.message_id: m for m in (next(consumer), next(consumer)) if m is not None}
    assert set(received) == {first.message_id, second.message_id}

    consumer.ack(received[first.message_id])
    consumer.nack(received[second.message_id])

    url, dead_letter_url = broker.queue_url(queue), broker.dead_letter_url(queue)
    assert consumer.message_refc == 0
    counts = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    assert set(attributes(broker, url, *counts).values()) == {"0"}
    [dead] = broker.client().receive_message(QueueUrl=dead_letter_url)["Messages"]
    assert Message.decode(b64decode(dead["Body"])).message_id == second.message_id


def test_bodies_that_are_not_messages_are_dead_lettered_and_the_next_one_comes(make_broker: Any) -> None:
    broker = make_broker()
    queue = broker.test_queue
    url = broker.queue_url(queue)
    bodies = ["not base64 at all {", b64encode(b'{"queue_name": "not json').decode()]
    for body in bodies:
        broker.client().send_message(QueueUrl=url, MessageBody=body)
    broker.enqueue(good := message(queue))

    consumer = broker.consume(queue, prefetch=4, timeout=1000)
    received = None
    deadline = time.monotonic() + 10
    while received is None and time.monotonic() < deadline:
        received = next(consumer)

    assert received is not None and received.message_id == good.message_id
    dead = broker.client().receive_message(
        QueueUrl=broker.dead_letter_url(queue), MaxNumberOfMessages=10, WaitTimeSeconds=1
    )["Messages"]
    assert sorted(m["Body"] for m in dead) == sorted(bodies)


def test_requeue_makes_held_messages_visible_at_once(make_broker: Any) -> None:
    broker = make_broker()
    queue = broker.test_queue
    broker.enqueue(sent := message(queue))
    consumer = broker.consume(queue, prefetch=1, timeout=1000)
    held = next(consumer)
    assert held is not None

    consumer.requeue([held])

    assert consumer.message_refc == 0
    again = next(broker.consume(queue, prefetch=1, timeout=1000))
    assert again is not None and again.message_id == sent.message_id


def test_a_delay_is_sent_in_whole_seconds_rounded_up(make_broker: Any) -> None:
    broker = make_broker()
    queue = broker.test_queue

    broker.enqueue(message(queue), delay=1500)

    url = broker.queue_url(queue)
    assert (
        attributes(broker, url, "ApproximateNumberOfMessagesDelayed")["ApproximateNumberOfMessagesDelayed"]
        == "1"
    )
    consumer = broker.consume(queue, prefetch=1, timeout=1000)
    started = time.monotonic()
    received = None
    while received is None and time.monotonic() < started + 10:
        received = next(consumer)
    assert received is not None
    # Sent with DelaySeconds=2 (1500 ms rounded up): not there after 1 s, as a rounding down would be
    assert time.monotonic() - started > 1.2


def test_join_waits_in_milliseconds_as_dramatiq_says(make_broker: Any) -> None:
    # dramatiq-sqs 0.4.4 read join's timeout as seconds: 1500 would have waited 25 minutes
    broker = make_broker()
    queue = broker.test_queue
    broker.join(queue, timeout=1500)  # empty: returns at once
    broker.enqueue(message(queue))

    started = time.monotonic()
    with pytest.raises(dramatiq.errors.QueueJoinTimeout):
        broker.join(queue, timeout=1500)

    assert time.monotonic() - started < 5
