"""django_messenger.publishing on a Redis that refuses writes: out of memory under ``noeviction``.

Each test starts a redis-server of its own (tests/redisserver.py): the machine's Redis is
shared, and these tests change its memory limit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from django_messenger.brokers.redis import RedisBroker as MessengerRedisBroker
from django_messenger.exceptions import BrokerUnavailable
from django_messenger.publishing import publish
from tests.redisserver import RedisServer

QUEUE = "oom"


@pytest.fixture
def server(tmp_path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path, "--maxmemory-policy", "noeviction") as running:
        yield running


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(server.url)
    yield connection
    connection.close()


def a_message() -> Message[object]:
    return Message(queue_name=QUEUE, actor_name="noop", args=(), kwargs={}, options={})


def queued(client: redis.Redis, namespace: str) -> int:
    return int(client.llen(f"{namespace}:{QUEUE}")) + int(client.hlen(f"{namespace}:{QUEUE}.msgs"))


@pytest.mark.parametrize("broker_class", [RedisBroker, MessengerRedisBroker])
def test_a_redis_out_of_memory_refuses_the_send_as_broker_unavailable(server, client, broker_class):
    # Given a Redis whose memory is full under noeviction (any limit below its use will do)
    namespace = f"oom-{uuid.uuid4().hex[:8]}"
    broker = broker_class(url=server.url, namespace=namespace, middleware=[])
    broker.declare_queue(QUEUE)
    client.config_set("maxmemory", 1)

    # When a message is published
    with pytest.raises(BrokerUnavailable) as caught:
        publish(broker, a_message())

    # Then it is a BrokerUnavailable (a 503 in a view), chained to Redis's own refusal,
    # whose reason says what happened; and nothing was stored, not even half a message
    assert isinstance(caught.value.__cause__, redis.exceptions.OutOfMemoryError)
    assert "OutOfMemoryError" in caught.value.reason and "maxmemory" in caught.value.reason
    assert queued(client, namespace) == 0

    # When memory is available again, Then the same broker sends at once, with no reconnect
    client.config_set("maxmemory", 0)
    sent = publish(broker, a_message())
    assert queued(client, namespace) == 2
    assert client.hget(f"{namespace}:{QUEUE}.msgs", sent.options["redis_message_id"]) == sent.encode()
    broker.close()


def test_a_delayed_send_to_a_full_redis_is_refused_too(server, client):
    # Given a full Redis under noeviction
    namespace = f"oom-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=server.url, namespace=namespace, middleware=[])
    broker.declare_queue(QUEUE)
    client.config_set("maxmemory", 1)

    # When a message is published with a delay (to the delay queue)
    # Then it is refused the same way, and the delay queue holds nothing
    with pytest.raises(BrokerUnavailable):
        publish(broker, a_message(), delay=1_000)
    assert client.llen(f"{namespace}:{QUEUE}.DQ") == 0 and client.hlen(f"{namespace}:{QUEUE}.DQ.msgs") == 0
    broker.close()


@pytest.fixture
def evicting_server(tmp_path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path, "--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru") as running:
        yield running


def test_an_evicting_redis_drops_accepted_messages_without_a_word(evicting_server):
    # Given a Redis that evicts any key when full (allkeys-lru), and ten messages it accepted
    client = redis.Redis.from_url(evicting_server.url)
    namespace = f"evict-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=evicting_server.url, namespace=namespace, middleware=[])
    broker.declare_queue(QUEUE)
    for _ in range(10):
        publish(broker, a_message())
    assert queued(client, namespace) == 20

    # When other writes fill its memory (a cache sharing the Redis, say): none is refused
    for n in range(1_000):
        client.setrange(f"cache:{n}", 256 * 1024 - 1, "x")
        if queued(client, namespace) < 20:
            break

    # Then queued messages are gone: evicted, with no error to the sender or to any worker
    # (this is why W007 asks for noeviction, and why docs/transports.md says so)
    assert queued(client, namespace) < 20
    broker.close()
    client.close()


def test_dramatiqs_keys_have_no_expiry_so_volatile_policies_never_evict_them(server, client):
    # Given messages queued, delayed, and a worker's heartbeat (every kind of key Dramatiq writes)
    namespace = f"ttl-{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(url=server.url, namespace=namespace, middleware=[])
    broker.declare_queue(QUEUE)
    publish(broker, a_message())
    publish(broker, a_message(), delay=60_000)
    consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
    message = next(consumer)
    assert message is not None
    consumer.nack(message)  # to the dead letters

    # Then none of them has an expiry: a volatile-* policy (evicting only keys with one) leaves them
    keys = list(client.scan_iter(f"{namespace}:*"))
    assert len(keys) >= 5, keys
    assert {key: client.ttl(key) for key in keys} == {key: -1 for key in keys}
    consumer.close()
    broker.close()
