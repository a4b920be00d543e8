"""The reader of dramatiq-postgres' PostgresBroker: its queue table's rows counted in one query.

dramatiq-postgres keeps every message not acknowledged as a row of ``<schema>.<prefix>queue``
(``schema.sql`` of the package): ``queue_name``, a ``state`` (``queued``, ``consumed`` by a
worker, or ``rejected``: dead-lettered) and ``available_at`` (not delivered before). A delayed
message is written to the queue's delay queue (``<queue>.DQ``) with ``available_at`` = its eta;
a worker claims it when due and holds it until it moves it to ``<queue>``. So, per queue:

* ready: ``<queue>`` rows ``queued`` and due;
* in flight: ``<queue>`` rows ``consumed`` (claimed by a worker, not acknowledged);
* delayed: ``<queue>.DQ`` rows ``queued`` or ``consumed`` (held by a worker until their eta),
  and ``<queue>`` rows ``queued`` but not due yet;
* dead-lettered: ``<queue>`` and ``<queue>.DQ`` rows ``rejected``.

A dead worker's claimed rows count as in flight until the maintenance of the others puts them
back (after ``heartbeat_ttl``). The reader connects with the workers' connection settings (the
broker's pool's), the statement bounded by the timeout (PostgreSQL's ``statement_timeout``, and
the socket shut if the server does not answer); connecting is bounded by libpq's
``connect_timeout``, which is at least 2 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import psycopg
from dramatiq.common import dq_name
from psycopg import sql

from ..brokers.postgres import _Deadline
from . import QueueStats, StatsUnavailable

COUNT = """
SELECT queue_name, "state"::text, available_at > NOW() AS later, count(*)
FROM {table}
WHERE queue_name = ANY(%s)
GROUP BY 1, 2, 3
"""


def table_of(broker: Any) -> tuple[str, str]:
    """The schema and the name of ``broker``'s queue table."""
    schema = getattr(broker, "schema", None)
    if schema is not None:
        return schema, f"{getattr(broker, 'prefix', '')}queue"
    # dramatiq-postgres' own broker keeps them only in this name: "<schema>.<prefix>queue"
    schema, _, table = broker.maintenance_ns.partition(".")
    return schema, table


def _connect(broker: Any, timeout: float) -> psycopg.Connection[Any]:
    pool = broker.pool
    kwargs = dict(getattr(pool, "kwargs", None) or {})
    kwargs["connect_timeout"] = max(2, math.ceil(timeout))
    kwargs["autocommit"] = True
    return psycopg.connect(pool.conninfo, **kwargs)


def read(broker: Any, queues: Sequence[str], *, timeout: float) -> list[QueueStats]:
    schema, table = table_of(broker)
    query = sql.SQL(COUNT).format(table=sql.Identifier(schema, table))
    names = [name for queue in queues for name in (queue, dq_name(queue))]
    try:
        with (
            _connect(broker, timeout) as connection,
            _Deadline(connection.pgconn.socket, timeout) as deadline,
        ):
            try:
                connection.execute(
                    "SELECT set_config('statement_timeout', %s, false)", (f"{int(timeout * 1000)}",)
                )
                rows = connection.execute(query, (names,)).fetchall()
            except psycopg.OperationalError as exc:
                if deadline.fired:
                    raise StatsUnavailable("PostgreSQL did not answer in time (OperationalError).") from exc
                raise
    except psycopg.errors.UndefinedTable as exc:
        raise StatsUnavailable(
            f"dramatiq-postgres' queue table {schema}.{table} does not exist (its schema was not created)."
        ) from exc
    except psycopg.Error as exc:
        # psycopg's texts name the host, the port and the user: only the kind of error is shown.
        raise StatsUnavailable(f"PostgreSQL did not answer ({type(exc).__name__}).") from exc
    counts: dict[tuple[str, str, bool], int] = {(q, state, later): n for q, state, later, n in rows}

    def count(queue: str, state: str, later: bool | None = None) -> int:
        if later is None:
            return counts.get((queue, state, False), 0) + counts.get((queue, state, True), 0)
        return counts.get((queue, state, later), 0)

    return [
        QueueStats(
            queue=queue,
            ready=count(queue, "queued", False),
            in_flight=count(queue, "consumed"),
            delayed=count(queue, "queued", True)
            + count(dq_name(queue), "queued")
            + count(dq_name(queue), "consumed"),
            dead_lettered=count(queue, "rejected") + count(dq_name(queue), "rejected"),
        )
        for queue in queues
    ]
