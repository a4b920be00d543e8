"""``manage.py messenger_stats`` against the real RabbitMQ and Redis, in a process of its own.

Each test puts known numbers of messages on a queue of its own (ready, taken by a consumer and
not acknowledged, delayed, dead-lettered), runs the command as a user would, and reads its JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from django_messenger.stats.rabbitmq import AMQP_NOTE
from tests.amqp import closed_port
from tests.rabbitmqserver import RabbitmqServer

from .processes import manage, port_open, wait_for
from .rabbit import AMQP_URL, confirming_broker, publish_raw

REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.django_db(transaction=True)


def a_message(queue: str, n: int) -> Message[Any]:
    return Message(queue_name=queue, actor_name="stats-test", args=(n,), kwargs={}, options={})


def stats(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = manage(env, "messenger_stats", "--json", *args)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_clean_failure(done: subprocess.CompletedProcess[str], *secrets: str) -> None:
    """A CommandError: non-zero, one line, no traceback, nothing that tells where the broker is."""
    assert done.returncode == 1
    assert (
        done.stderr.startswith("CommandError: Could not read the queues:") and "--traceback" in done.stderr
    ), done.stderr
    assert "Traceback" not in done.stderr
    for secret in secrets:
        assert secret not in done.stdout + done.stderr


# --- RabbitMQ --------------------------------------------------------------------------------------


@pytest.fixture
def rabbit_env(process_env: dict[str, str], own_queue: str) -> dict[str, str]:
    return {**process_env, "MESSENGER_QUEUE": own_queue}


def test_rabbitmq_counts_over_amqp(rabbit_env: dict[str, str], own_queue: str) -> None:
    # Given 4 messages ready, 2 delayed and 1 dead-lettered on a queue of this test
    broker = confirming_broker(own_queue)
    try:
        for n in range(4):
            broker.enqueue(a_message(own_queue, n))
        for n in range(2):
            broker.enqueue(a_message(own_queue, n), delay=600_000)
    finally:
        broker.close()
    publish_raw(f"{own_queue}.XQ", b"dead")
    # and one of the ready ones taken by a consumer that has not acknowledged it
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        method, _, _ = channel.basic_get(own_queue, auto_ack=False)
        assert method is not None

        # When messenger_stats reads it
        [queue] = stats(rabbit_env, own_queue)["queues"]
    finally:
        connection.close()

    # Then over AMQP: ready excludes the taken one, in flight is unknown, delayed and dead counted
    assert queue == {
        "queue": own_queue,
        "ready": 3,
        "in_flight": None,
        "delayed": 2,
        "dead_lettered": 1,
        "notes": [AMQP_NOTE],
    }


def test_rabbitmq_lists_messengers_queues_and_does_not_declare_missing_ones(
    rabbit_env: dict[str, str], own_queue: str
) -> None:
    # The transport's queue (the fan-out actor's) and a handler's own queue ("other") are listed
    # by default; this test's queue was never declared: zeros and a note, and it is not created
    queues = {queue["queue"]: queue for queue in stats(rabbit_env)["queues"]}
    assert {own_queue, "other"} <= set(queues)
    assert queues[own_queue]["notes"] == ["not declared on the broker"]
    assert (queues[own_queue]["ready"], queues[own_queue]["dead_lettered"]) == (0, 0)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            connection.channel().queue_declare(own_queue, passive=True)
    finally:
        connection.close()


def test_rabbitmq_unreachable_is_a_command_error(rabbit_env: dict[str, str]) -> None:
    port = closed_port()
    url = f"amqp://stats-user:stats-secret@127.0.0.1:{port}/%2F"
    done = manage({**rabbit_env, "MESSENGER_BROKER_URL": url}, "messenger_stats")
    assert_clean_failure(done, "stats-secret", "stats-user", str(port))
    assert "RabbitMQ could not be reached" in done.stderr


# --- Redis -----------------------------------------------------------------------------------------


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    if not port_open(6379):
        if os.environ.get("CI"):
            pytest.fail("Redis is not listening on 127.0.0.1:6379 (CI must start it).")
        pytest.skip("Redis is not listening on 127.0.0.1:6379.")
    namespace = f"messenger-stats-{uuid.uuid4().hex[:12]}"
    yield namespace
    server = redis.Redis.from_url(REDIS_URL)
    keys = list(server.scan_iter(f"{namespace}:*"))
    if keys:
        server.delete(*keys)
    server.close()


@pytest.fixture
def redis_env(process_env: dict[str, str], redis_namespace: str) -> dict[str, str]:
    return {
        **process_env,
        "MESSENGER_TEST_BROKER": "redis",
        "MESSENGER_BROKER_URL": REDIS_URL,
        "MESSENGER_REDIS_NAMESPACE": redis_namespace,
        # messenger's subclass of Dramatiq's RedisBroker: read by its parent's reader
        "MESSENGER_REDIS_BROKER": "django_messenger.brokers.redis.RedisBroker",
    }


def test_redis_counts_from_its_keys(redis_env: dict[str, str], redis_namespace: str) -> None:
    queue_name = f"stats-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=REDIS_URL, namespace=redis_namespace, middleware=[])
    try:
        # Given 5 messages enqueued and 2 delayed,
        broker.declare_queue(queue_name)
        for n in range(5):
            broker.enqueue(a_message(queue_name, n))
        for n in range(2):
            broker.enqueue(a_message(queue_name, n), delay=600_000)
        # two fetched by a worker: one it still holds, one it dead-lettered
        consumer = broker.consume(queue_name, prefetch=2, timeout=1000)
        held, doomed = next(consumer), next(consumer)
        assert held is not None and doomed is not None
        consumer.nack(doomed)

        # When messenger_stats reads it
        [queue] = stats(redis_env, queue_name)["queues"]
    finally:
        broker.close()

    # Then every column is known on Redis
    assert queue == {
        "queue": queue_name,
        "ready": 3,
        "in_flight": 1,
        "delayed": 2,
        "dead_lettered": 1,
        "notes": [],
    }


def test_redis_unreachable_is_a_command_error(redis_env: dict[str, str]) -> None:
    port = closed_port()
    url = f"redis://:stats-secret@127.0.0.1:{port}/0"
    done = manage({**redis_env, "MESSENGER_BROKER_URL": url}, "messenger_stats")
    assert_clean_failure(done, "stats-secret", str(port))
    assert "Redis did not answer (ConnectionError)" in done.stderr


# --- RabbitMQ's management API, on a node of this module's own -------------------------------------


@pytest.fixture(scope="module")
def management_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitmqServer]:
    with RabbitmqServer(tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


def test_rabbitmq_counts_through_the_management_api(
    process_env: dict[str, str], management_node: RabbitmqServer
) -> None:
    queue_name = f"stats-{uuid.uuid4().hex[:8]}"
    env = {
        **process_env,
        "DJANGO_SETTINGS_MODULE": "tests.integration.dashboard_settings",
        "MESSENGER_BROKER_URL": management_node.amqp_url,
        "MESSENGER_QUEUE": queue_name,
    }
    # Given 4 messages ready, 2 delayed and 1 dead-lettered on the node
    broker = RabbitmqBroker(url=management_node.amqp_url, confirm_delivery=True, middleware=[])
    try:
        broker.declare_queue(queue_name)
        for n in range(4):
            broker.enqueue(a_message(queue_name, n))
        for n in range(2):
            broker.enqueue(a_message(queue_name, n), delay=600_000)
    finally:
        broker.close()
    connection = pika.BlockingConnection(pika.URLParameters(management_node.amqp_url))
    try:
        channel = connection.channel()
        channel.basic_publish("", f"{queue_name}.XQ", b"dead")
        # and a consumer holding one ready message and one delayed one, unacknowledged
        assert channel.basic_get(queue_name, auto_ack=False)[0] is not None
        assert channel.basic_get(f"{queue_name}.DQ", auto_ack=False)[0] is not None

        # When messenger_stats reads it through the management API
        expected = {
            "queue": queue_name,
            "ready": 3,
            "in_flight": 1,
            "delayed": 2,
            "dead_lettered": 1,
            "notes": [],
        }
        with_api = {**env, "MESSENGER_RABBITMQ_MANAGEMENT_URL": management_node.management_url}

        # Then every column is known, the held delayed message included (the API's statistics
        # lag by their collection interval: read until they are there)
        wait_for(
            lambda: stats(with_api, queue_name)["queues"] == [expected],
            timeout=60,
            interval=1,
            what="the management API's statistics",
        )
        # while over AMQP in flight is unknown and the held delayed message is not counted
        [over_amqp] = stats(env, queue_name)["queues"]
        assert (over_amqp["ready"], over_amqp["in_flight"], over_amqp["delayed"]) == (3, None, 1)

        # And credentials the API refuses are a CommandError that does not show them
        refused = {
            **env,
            "MESSENGER_RABBITMQ_MANAGEMENT_URL": management_node.management_url.replace(
                "http://", "http://stats-user:stats-secret@"
            ),
        }
        done = manage(refused, "messenger_stats")
        assert_clean_failure(done, "stats-secret", "stats-user")
        assert "The RabbitMQ management API answered HTTP 401" in done.stderr
    finally:
        connection.close()
