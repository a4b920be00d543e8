"""The Celery side of the comparison: one no-op task on the same RabbitMQ (optional ``bench`` extra).

Celery's defaults otherwise: JSON, no publisher confirms, acks on receipt, prefetch multiplier 4.
"""

from __future__ import annotations

import os

from celery import Celery

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
QUEUE = f"{PREFIX}-celery"

app = Celery("bench", broker=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
app.conf.update(
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    worker_enable_remote_control=False,  # no pidbox queue to clean up
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(name: str, count: int) -> None:
    """Does nothing."""
