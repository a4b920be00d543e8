"""The brokers the benchmarks run on: one entry each in :data:`BROKERS`.

``python -m benchmarks.worker --broker redis`` (and ``benchmarks.http_dispatch``) runs every
variant on that broker: messenger, the hand-written Dramatiq view or actor, and the plain
``dramatiq`` CLI all build their Dramatiq broker from the same entry (same class, URL and
options), so a ratio compares the layers above the broker and nothing else. The benchmark
project's processes find their entry by ``BENCH_BROKER`` (``settings.py``, ``raw_actor.py``);
the scripts use the entry to put messages on a queue, count them and clean up.

Adding a broker (Amazon SQS on a moto server, PostgreSQL with dramatiq-postgres...) is one
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


#: Every broker the benchmarks know, by ``--broker`` name.
BROKERS: dict[str, type[BenchBroker]] = {"rabbitmq": Rabbitmq, "redis": Redis}


def selected() -> type[BenchBroker]:
    """The entry of the benchmark processes: ``BENCH_BROKER`` (RabbitMQ when unset)."""
    name = os.environ.get("BENCH_BROKER", DEFAULT)
    try:
        return BROKERS[name]
    except KeyError:
        raise SystemExit(f"BENCH_BROKER={name!r} is not one of {', '.join(BROKERS)}.") from None
