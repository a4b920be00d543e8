"""Pub/Sub beyond the contract suite: what only Pub/Sub needs, with real workers on Google's emulator.

The contract suite (tests/integration/contract/) runs every broker's common cases on Pub/Sub
too. Here: a handler that runs longer than the subscription's ack deadline (10 s, Pub/Sub's
shortest) runs once, because the worker extends the deadline of the messages it holds, while a
second worker pulls the same subscription; and a worker's acknowledgements reach Pub/Sub (what it
handled never comes back, past the deadline and the retry backoff, while a message given back does).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq import Message

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


def test_what_a_worker_handled_is_acknowledged_and_never_comes_back(
    pubsub: PubSub, process_env: dict[str, str], log_dir: Path, workers: list[Process]
) -> None:
    # Given a worker that handled three messages, then stopped
    env = {**process_env, **pubsub.env(), "MESSENGER_QUEUE": pubsub.new_queue()}
    queue = env["MESSENGER_QUEUE"]
    worker = start_worker(env, log_dir, queues=[queue], threads=2)
    workers.append(worker)
    sent = [envelope_message(queue, WORK, Work(n=n)) for n in range(3)]
    enqueue(pubsub, *(message for _, message in sent))
    handled = [envelope.message_id for envelope, _ in sent]
    wait_for(
        lambda: Effect.objects.filter(handler="work", message_id__in=handled).count() == 3,
        timeout=30,
        what="the worker to handle the three messages",
    )
    worker.stop()

    # And a message pulled and given back (not acknowledged), which must come back: the control
    broker = pubsub._broker(queue)
    control_envelope, control = envelope_message(queue, WORK, Work(n=99))
    broker.enqueue(control)
    consumer = broker.consume(queue, prefetch=1, timeout=1000)
    held = []
    deadline = time.monotonic() + 20
    while not held and time.monotonic() < deadline:
        got = next(consumer)
        if got is not None:
            held.append(got)
    assert [m.message_id for m in held] == [control.message_id]
    consumer.requeue(held)

    # When the ack deadline and the retry policy's longest backoff have passed
    subscription = broker.subscription_path(queue)
    policy = broker.subscriber.get_subscription(subscription=subscription).retry_policy
    backoff = policy.maximum_backoff.total_seconds()
    time.sleep(PUBSUB_ACK_DEADLINE + backoff + 1)

    # Then a pull finds the given-back message only
    found: set[str] = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = broker.subscriber.pull(
            request={"subscription": subscription, "max_messages": 100}, timeout=2
        )
        found |= {Message.decode(r.message.data).message_id for r in response.received_messages}
    assert found == {control.message_id}
    assert not Effect.objects.filter(handler="work", message_id=control_envelope.message_id).exists()
