"""Pub/Sub beyond the contract suite: what only Pub/Sub needs, with real workers on Google's emulator.

The contract suite (tests/integration/contract/) runs every broker's common cases on Pub/Sub
too. Here: a handler that runs longer than the subscription's ack deadline (10 s, Pub/Sub's
shortest) runs once, because the worker extends the deadline of the messages it holds, while a
second worker pulls the same subscription.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testapp.messages import Work
from tests.testapp.models import Effect

from .contract.brokers import PUBSUB_ACK_DEADLINE, PubSub, enqueue
from .processes import Process, start_worker, wait_for
from .rabbit import envelope_message

pytestmark = pytest.mark.django_db(transaction=True)

WORK = "tests.testapp.handlers.work"


@pytest.fixture(scope="module")
def pubsub() -> Iterator[PubSub]:
    broker = PubSub()
    broker.require()
    yield broker
    broker.cleanup()


def test_a_task_longer_than_the_ack_deadline_runs_once(
    pubsub: PubSub, process_env: dict[str, str], log_dir: Path, workers: list[Process]
) -> None:
    # Given two workers on one queue whose subscription's ack deadline is 10 s
    env = {**process_env, **pubsub.env(), "MESSENGER_QUEUE": pubsub.new_queue()}
    queue = env["MESSENGER_QUEUE"]
    for _ in range(2):
        workers.append(start_worker(env, log_dir, queues=[queue], threads=1))

    # When a handler runs 13 s
    envelope, message = envelope_message(queue, WORK, Work(n=13, sleep_ms=13_000))
    enqueue(pubsub, message)
    wait_for(
        lambda: Effect.objects.filter(handler="work-started", message_id=envelope.message_id).exists(),
        timeout=30,
        what="the handler to start",
    )
    started = time.monotonic()
    wait_for(
        lambda: Effect.objects.filter(handler="work", message_id=envelope.message_id).exists(),
        timeout=60,
        what="the handler to end",
    )
    assert time.monotonic() - started > PUBSUB_ACK_DEADLINE  # it did outlast the deadline

    # Then it ran once: no other delivery started it again, then or after the ack
    time.sleep(3)
    assert Effect.objects.filter(handler="work-started", message_id=envelope.message_id).count() == 1
    assert Effect.objects.filter(handler="work", message_id=envelope.message_id).count() == 1
    assert pubsub.dead_letters(queue) == 0
