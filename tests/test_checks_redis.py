"""W006 / W007: a Redis broker whose sends are not bounded by PUBLISH_TIMEOUT, or that can lose a 202.

W006 reads the connection a broker's pool would make (no network); W007 asks a real Redis
(``check --deploy`` only): redis-servers started here with the settings under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.core import checks
from dramatiq.brokers.redis import RedisBroker
from redis.backoff import NoBackoff
from redis.retry import Retry

from django_messenger.checks import check_broker, check_redis_durability, redis_send_bound
from django_messenger.transports.dramatiq.binding import binding
from tests.integration.processes import free_port
from tests.redisserver import RedisServer


@pytest.fixture
def redis_broker(monkeypatch):
    def use(url: str, **options: object) -> RedisBroker:
        broker = RedisBroker(url=url, middleware=[], **options)
        monkeypatch.setattr(binding, "_broker", broker)
        return broker

    return use


def ids(messages: list[checks.CheckMessage]) -> set[str]:
    return {message.id for message in messages if message.id}


# --- W006: the socket timeouts bound a send, within PUBLISH_TIMEOUT --------------------------------


def test_a_url_without_socket_timeouts_is_w006(redis_broker, settings):
    # Given redis-py's own defaults (no timeout in older versions, 5 s each in redis-py 8)
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 5.0}
    redis_broker("redis://127.0.0.1:6379/0")

    [warning] = check_broker()

    assert warning.id == "django_messenger.W006"
    assert "PUBLISH_TIMEOUT" in warning.msg and "socket_timeout=" in (warning.hint or "")


def test_socket_timeouts_in_the_url_within_publish_timeout_are_quiet(redis_broker, settings):
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 5.0}
    broker = redis_broker("redis://127.0.0.1:6379/0?socket_timeout=2&socket_connect_timeout=2")

    assert redis_send_bound(broker) == 4.0
    assert check_broker() == []


def test_socket_timeouts_adding_up_to_more_than_publish_timeout_are_w006(redis_broker, settings):
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 1.0}
    redis_broker("redis://127.0.0.1:6379/0?socket_timeout=2&socket_connect_timeout=2")

    [warning] = check_broker()

    assert warning.id == "django_messenger.W006" and "up to 4 s" in warning.msg


def test_keyword_timeouts_beside_a_url_are_ignored_and_so_w006(redis_broker, settings):
    # Given timeouts as broker options: redis-py builds the pool from the URL alone
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 5.0}
    redis_broker("redis://127.0.0.1:6379/0", socket_timeout=1, socket_connect_timeout=1)

    assert ids(check_broker()) == {"django_messenger.W006"}


def test_keyword_timeouts_without_a_url_count_with_redis_pys_ten_retries(monkeypatch, settings):
    # Given timeouts of 1 s as keywords, with no URL: redis-py then retries 10 times, backing off
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 5.0}
    broker = RedisBroker(host="127.0.0.1", socket_timeout=1, socket_connect_timeout=1, middleware=[])
    monkeypatch.setattr(binding, "_broker", broker)

    # Then a send may take 11 tries of 2 s plus 10 backoffs of at most 1 s
    assert redis_send_bound(broker) == 32.0
    assert ids(check_broker()) == {"django_messenger.W006"}


def test_retries_multiply_the_bound(redis_broker, settings):
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 5.0}
    broker = redis_broker("redis://127.0.0.1:6379/0?socket_timeout=1&socket_connect_timeout=1")
    broker.client.connection_pool.connection_kwargs["retry"] = Retry(NoBackoff(), 2)

    assert redis_send_bound(broker) == 6.0
    assert ids(check_broker()) == {"django_messenger.W006"}


# --- W007: the durability of a 202 (check --deploy only) --------------------------------------------


def test_w007_is_a_deployment_check_only():
    assert check_redis_durability in checks.registry.registry.get_checks(include_deployment_checks=True)
    assert check_redis_durability not in checks.registry.registry.get_checks(include_deployment_checks=False)


@pytest.fixture
def own_redis(tmp_path) -> Iterator[Callable[..., int]]:
    """``start(*options)``: a redis-server of this test with those options; returns its port."""
    started: list[RedisServer] = []

    def start(*options: str) -> int:
        server = RedisServer(tmp_path, *options).start()
        started.append(server)
        return server.port

    yield start
    for server in started:
        server.stop()


DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


def test_redis_without_an_aof_is_w007(redis_broker, own_redis):
    # Given a Redis as .ci/run starts one: no persistence at all
    port = own_redis("--appendonly", "no")
    redis_broker(f"redis://127.0.0.1:{port}/0?socket_timeout=2&socket_connect_timeout=2")

    [warning] = check_redis_durability()

    assert warning.id == "django_messenger.W007"
    assert "appendonly no" in warning.msg and "appendfsync always" in (warning.hint or "")


def test_redis_with_an_fsynced_aof_and_no_eviction_is_quiet(redis_broker, own_redis):
    port = own_redis(*DURABLE)
    redis_broker(f"redis://127.0.0.1:{port}/0?socket_timeout=2&socket_connect_timeout=2")

    assert check_redis_durability() == []


def test_redis_that_evicts_keys_is_w007(redis_broker, own_redis):
    # Given an fsynced AOF, but a full Redis that evicts keys (queued messages among them)
    port = own_redis(*DURABLE, "--maxmemory-policy", "allkeys-lru")
    redis_broker(f"redis://127.0.0.1:{port}/0?socket_timeout=2&socket_connect_timeout=2")

    [warning] = check_redis_durability()

    assert warning.id == "django_messenger.W007" and "maxmemory-policy allkeys-lru" in warning.msg


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl"])
def test_redis_that_evicts_only_keys_with_an_expiry_is_quiet(redis_broker, own_redis, policy):
    # Given an fsynced AOF and a policy that evicts only keys with an expiry: Dramatiq sets none,
    # so a full Redis refuses writes (a 503) instead of dropping queued messages
    port = own_redis(*DURABLE, "--maxmemory-policy", policy)
    redis_broker(f"redis://127.0.0.1:{port}/0?socket_timeout=2&socket_connect_timeout=2")

    assert check_redis_durability() == []


def test_a_redis_that_cannot_be_asked_is_w007_saying_so(redis_broker):
    # Given nothing listens on the broker's port
    redis_broker(f"redis://127.0.0.1:{free_port()}/0?socket_timeout=1&socket_connect_timeout=1")

    [warning] = check_redis_durability()

    assert warning.id == "django_messenger.W007" and "could not be read (ConnectionError)" in warning.msg


def test_other_brokers_get_neither(settings):
    assert binding.broker is not None and not isinstance(binding.broker, RedisBroker)  # the StubBroker
    assert ids(check_broker()) & {"django_messenger.W006"} == set()
    assert check_redis_durability() == []
