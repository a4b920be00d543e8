"""A raw Dramatiq no-op actor for the plain ``dramatiq`` CLI: no Django, no messenger.

``dramatiq benchmarks.raw_actor --queues $BENCH_PLAIN_QUEUE`` runs it. The broker has the
benchmark project's URL and options, and its Dramatiq middleware list minus django-dramatiq's
``DbConnectionsMiddleware`` (which needs Django). The actor name and options are those of
``benchmarks.project.bench.tasks.raw_noop``. The broker is ``BENCH_BROKER``'s entry in
``benchmarks.brokers`` (RabbitMQ by default), built as the project's settings describe it.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.middleware import AgeLimit, Callbacks, Retries, TimeLimit

from benchmarks.brokers import selected

QUEUE = os.environ.get("BENCH_PLAIN_QUEUE", "bench-plain")

broker = selected().build(
    os.environ.get("BENCH_PREFIX", "bench"),
    os.environ.get("BENCH_CONFIRM", "1") == "1",
    middleware=[AgeLimit(), TimeLimit(), Callbacks(), Retries()],
)
dramatiq.set_broker(broker)


@dramatiq.actor(
    actor_name="bench.raw_noop", queue_name=QUEUE, max_retries=3, min_backoff=1_000, max_backoff=300_000
)
def raw_noop(name: str, count: int) -> None:
    """Does nothing."""
