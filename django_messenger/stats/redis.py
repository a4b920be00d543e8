"""The reader of Dramatiq's RedisBroker: counts read from its keys, in one MULTI/EXEC.

Dramatiq's layout (``dramatiq/brokers/redis/dispatch.lua``), under the broker's namespace:
``<queue>`` is the list of ready message ids, ``<queue>.msgs`` the hash of every message not
acknowledged yet (ready and fetched), ``<queue>.DQ.msgs`` the same for the delay queue (whose
messages a worker holds until due) and ``<queue>.XQ`` the sorted set of dead letters. So:
ready = LLEN ``<queue>``; in flight = HLEN ``<queue>.msgs`` - ready (fetched by a worker, in its
``__acks__`` set, not acknowledged); delayed = HLEN ``<queue>.DQ.msgs``; dead-lettered = ZCARD
``<queue>.XQ``. Fetched messages of a worker that died count as in flight until Dramatiq's
maintenance puts them back (after ``heartbeat_timeout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import QueueStats, StatsUnavailable


def bounded_client(broker: Any, timeout: float) -> redis.Redis:
    """A client on the broker's server and database whose every command ends within ``timeout`` s."""
    pool = broker.client.connection_pool
    kwargs = {
        **pool.connection_kwargs,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    return redis.Redis(connection_pool=pool.__class__(connection_class=pool.connection_class, **kwargs))


def read(broker: Any, queues: Sequence[str], *, timeout: float) -> list[QueueStats]:
    namespace = broker.namespace
    client = bounded_client(broker, timeout)
    try:
        pipeline = client.pipeline(transaction=True)
        for name in queues:
            key = f"{namespace}:{name}"
            pipeline.llen(key)
            pipeline.hlen(f"{key}.msgs")
            pipeline.hlen(f"{key}.DQ.msgs")
            pipeline.zcard(f"{key}.XQ")
        counts = pipeline.execute()
    except redis.RedisError as exc:
        # redis-py's texts name the host and port: only the kind of error is shown.
        raise StatsUnavailable(f"Redis did not answer ({type(exc).__name__}).") from exc
    finally:
        client.close()
        client.connection_pool.disconnect()
    stats = []
    for index, name in enumerate(queues):
        ready, unacknowledged, delayed, dead = (int(n) for n in counts[index * 4 : index * 4 + 4])
        stats.append(
            QueueStats(
                queue=name,
                ready=ready,
                in_flight=max(0, unacknowledged - ready),
                delayed=delayed,
                dead_lettered=dead,
            )
        )
    return stats
