"""The reader of Dramatiq's StubBroker (tests): its in-memory queues, counted as they are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dramatiq.common import dq_name

from . import QueueStats


def read(broker: Any, queues: Sequence[str], *, timeout: float) -> list[QueueStats]:
    """Ready: on the queue; in flight: taken by a consumer and not done; delayed: on or taken from ``.DQ``."""
    stats = []
    for name in queues:
        queue = broker.queues.get(name)
        delay_queue = broker.queues.get(dq_name(name))
        ready = queue.qsize() if queue is not None else 0
        taken = queue.unfinished_tasks if queue is not None else 0
        dead = len(broker.dead_letters_by_queue.get(name, ())) + len(
            broker.dead_letters_by_queue.get(dq_name(name), ())
        )
        stats.append(
            QueueStats(
                queue=name,
                ready=ready,
                in_flight=max(0, taken - ready),
                delayed=delay_queue.unfinished_tasks if delay_queue is not None else 0,
                dead_lettered=dead,
                notes=() if queue is not None else ("not declared on the broker",),
            )
        )
    return stats
