"""The brokers of the contract suite: what the processes need to use one, and how to look inside it.

Adding a broker to the suite is one more :class:`ContractBroker` subclass in :data:`BROKERS`
(and its server in ``.ci/run``): the fixtures in ``conftest.py`` and every test of
``test_contract.py`` then run on it too, as Dramatiq's own suite runs one set of tests on
each broker through same-named fixtures.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, ClassVar

import pytest
import redis
from dramatiq import Broker, Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from django_messenger.brokers.rabbitmq import QUORUM, use_queue_types

from ..conftest import AMQP_URL, delete_queues
from ..processes import port_open
from ..rabbit import publish_raw, queue_depth


class ContractBroker:
    """One broker under the contract: its server's port, the processes' settings, its queues.

    The processes read ``MESSENGER_TEST_BROKER`` and ``MESSENGER_BROKER_URL``
    (tests/integration/settings.py); :meth:`url` points them at the server or at a FaultProxy.
    """

    name: ClassVar[str]
    port: ClassVar[int]
    #: What a worker's environment needs for it to dead-letter bodies that are not messages.
    dead_lettering_env: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:12]
        self.queues: list[str] = []

    def require(self) -> None:
        """Skip (fail in CI) when the broker's server does not listen on loopback."""
        if not port_open(self.port):
            reason = f"{self.name} is not listening on 127.0.0.1:{self.port}"
            if os.environ.get("CI"):
                pytest.fail(f"{reason} (CI must start it).")
            pytest.skip(f"{reason}.")

    def new_queue(self) -> str:
        """A queue of this run only, removed (with its delay and dead letters) by :meth:`cleanup`."""
        name = f"messenger-contract-{self.run}-{len(self.queues)}"
        self.queues.append(name)
        return name

    def url(self, port: int | None = None) -> str:
        """The broker URL of the processes: the server's, or a proxy's on ``port``."""
        raise NotImplementedError

    def env(self, *, port: int | None = None) -> dict[str, str]:
        """The environment that makes a process use this broker (through ``port``, if given)."""
        return {"MESSENGER_TEST_BROKER": self.name, "MESSENGER_BROKER_URL": self.url(port)}

    def client(self) -> Broker:
        """A Dramatiq broker in the test process, to enqueue messages as a web process does."""
        raise NotImplementedError

    def dead_letters(self, queue: str) -> int:
        """How many messages ``queue``'s dead letters hold."""
        raise NotImplementedError

    def put_raw(self, queue: str, body: bytes) -> None:
        """Put ``body`` on ``queue`` as it is, where the broker's consumers read message bodies."""
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError


class Rabbitmq(ContractBroker):
    name = "rabbitmq"
    port = 5672

    def url(self, port: int | None = None) -> str:
        return f"amqp://guest:guest@127.0.0.1:{port or self.port}/%2F"

    def client(self) -> Broker:
        return RabbitmqBroker(url=AMQP_URL, confirm_delivery=True, middleware=[])

    def dead_letters(self, queue: str) -> int:
        return queue_depth(f"{queue}.XQ")

    def put_raw(self, queue: str, body: bytes) -> None:
        publish_raw(queue, body)

    def cleanup(self) -> None:
        if self.queues:
            delete_queues(*self.queues)


class RabbitmqQuorum(Rabbitmq):
    """RabbitMQ with ``queue_type = "quorum"``: the queues, delay and dead-letter queues are quorum
    queues (on the machine's single node; tests/integration/test_cluster.py runs a cluster)."""

    name = "rabbitmq-quorum"

    def env(self, *, port: int | None = None) -> dict[str, str]:
        # tests/integration/settings.py: any broker name but "redis" is RabbitMQ
        return {**super().env(port=port), "MESSENGER_QUEUE_TYPE": "quorum"}

    def client(self) -> Broker:
        # The test process enqueues as a web process does: declaring quorum queues, or the worker
        # would find classic ones (and refuse them, PRECONDITION_FAILED).
        broker = RabbitmqBroker(url=AMQP_URL, confirm_delivery=True, middleware=[])
        use_queue_types(broker, lambda queue: QUORUM)
        return broker


#: How long a Redis worker may go without a heartbeat before its messages are requeued (ms):
#: short, so that the SIGKILL case sees them back within seconds (Dramatiq's default is 60 s).
REDIS_HEARTBEAT_TIMEOUT = 3000


class Redis(ContractBroker):
    name = "redis"
    port = 6379
    #: Dramatiq's own RedisBroker leaves such a body unacknowledged (django_messenger/brokers/redis.py)
    dead_lettering_env: ClassVar[dict[str, str]] = {
        "MESSENGER_REDIS_BROKER": "django_messenger.brokers.redis.RedisBroker"
    }

    def __init__(self) -> None:
        super().__init__()
        #: Every key of this run is under it: runs sharing the server do not collide.
        self.namespace = f"messenger-contract-{self.run}"

    def url(self, port: int | None = None) -> str:
        return f"redis://127.0.0.1:{port or self.port}/0"

    def env(self, *, port: int | None = None) -> dict[str, str]:
        return {
            **super().env(port=port),
            "MESSENGER_REDIS_NAMESPACE": self.namespace,
            "MESSENGER_REDIS_HEARTBEAT_TIMEOUT": str(REDIS_HEARTBEAT_TIMEOUT),
            # 1 command in 10 runs the maintenance that requeues a dead worker's messages
            "MESSENGER_REDIS_MAINTENANCE_CHANCE": "100000",
        }

    def client(self) -> Broker:
        return RedisBroker(url=self.url(), namespace=self.namespace, middleware=[])

    def _redis(self) -> Any:
        return redis.Redis.from_url(self.url())

    def dead_letters(self, queue: str) -> int:
        return int(self._redis().zcard(f"{self.namespace}:{queue}.XQ"))

    def put_raw(self, queue: str, body: bytes) -> None:
        # As dispatch.lua's enqueue: the body in the queue's hash, its id at the end of the list
        redis_id = str(uuid.uuid4())
        server = self._redis()
        server.hset(f"{self.namespace}:{queue}.msgs", redis_id, body)
        server.rpush(f"{self.namespace}:{queue}", redis_id)

    def cleanup(self) -> None:
        server = self._redis()
        keys = list(server.scan_iter(f"{self.namespace}:*"))
        if keys:
            server.delete(*keys)


BROKERS: dict[str, type[ContractBroker]] = {
    "rabbitmq": Rabbitmq,
    "rabbitmq-quorum": RabbitmqQuorum,
    "redis": Redis,
}


def enqueue(broker: ContractBroker, *messages: Message[Any]) -> None:
    """Put ``messages`` on their queues through a fresh client, as a web process would."""
    client = broker.client()
    try:
        for message in messages:
            client.declare_queue(message.queue_name)
            client.enqueue(message)
    finally:
        client.close()
