"""A raw Dramatiq no-op actor for the plain ``dramatiq`` CLI: no Django, no messenger.

``dramatiq benchmarks.raw_actor --queues $BENCH_PLAIN_QUEUE`` runs it. The broker has the
benchmark project's URL and options, and its Dramatiq middleware list minus django-dramatiq's
``DbConnectionsMiddleware`` (which needs Django). The actor name and options are those of
``benchmarks.project.bench.tasks.raw_noop``.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AgeLimit, Callbacks, Retries, TimeLimit

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
QUEUE = os.environ.get("BENCH_PLAIN_QUEUE", "bench-plain")

broker = RabbitmqBroker(
    url=f"{AMQP_URL}?heartbeat=30&blocked_connection_timeout=10",
    confirm_delivery=os.environ.get("BENCH_CONFIRM", "1") == "1",
    middleware=[AgeLimit(), TimeLimit(), Callbacks(), Retries()],
)
dramatiq.set_broker(broker)


@dramatiq.actor(
    actor_name="bench.raw_noop", queue_name=QUEUE, max_retries=3, min_backoff=1_000, max_backoff=300_000
)
def raw_noop(name: str, count: int) -> None:
    """Does nothing."""
