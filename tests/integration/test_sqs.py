"""SQS beyond the contract suite: what only SQS has, with real processes on a moto server.

The contract suite (tests/integration/contract/) runs every broker's common cases on SQS too.
Here: a size limit of its own, below messenger's default MAX_MESSAGE_SIZE (W009), measured on
the base64 text dramatiq-sqs sends (a 413, never a 503 or a 500); and a message that kills its
worker every time, dead-lettered by the queue's redrive policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from django_messenger.brokers.sqs import SQSBroker
from tests.testapp.messages import Ping, Work
from tests.testapp.models import Effect

from .contract.brokers import Sqs
from .processes import Process, start_server, start_worker, wait_for
from .rabbit import envelope_message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def sqs() -> Iterator[Sqs]:
    broker = Sqs()
    broker.require()
    yield broker
    broker.cleanup()


@pytest.fixture
def server_with_default_size(sqs: Sqs, process_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """A server on SQS with messenger's default MAX_MESSAGE_SIZE (1 MiB): larger than SQS takes."""
    env = {**process_env, **sqs.env(), "MESSENGER_QUEUE": sqs.new_queue()}
    env.pop("MESSENGER_MAX_MESSAGE_SIZE")
    process, url = start_server(env, log_dir, wsgi="tests.integration.wsgi:application", threads=2)
    yield url
    process.stop()


def test_a_write_within_max_message_size_but_over_sqs_limit_is_a_413(
    sqs: Sqs, server_with_default_size: str
) -> None:
    # Given an article whose envelope (~800 KB) is under MAX_MESSAGE_SIZE (1 MiB) but whose
    # message, base64-encoded, is over SQS's 1 MiB
    body = "x" * 800_000

    response = requests.post(
        f"{server_with_default_size}/articles/", json={"title": "Big", "body": body, "price": "1"}, timeout=30
    )

    # Then it is refused as too large, with a JSON detail, and nothing was sent
    assert response.status_code == 413, response.text[:500]
    assert "too large to be sent as one message" in response.json()["detail"]  # not the parser's 413
    assert "127.0.0.1" not in response.text and "sqs" not in response.text.lower()
    client = sqs.client()
    queue = sqs.queues[-1]
    client.declare_queue(queue)
    found = client.client().get_queue_attributes(  # type: ignore[attr-defined]
        QueueUrl=client.queue_url(queue),  # type: ignore[attr-defined]
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
    )
    assert set(found["Attributes"].values()) == {"0"}

    # And a write that fits is accepted
    ok = requests.post(
        f"{server_with_default_size}/articles/",
        json={"title": "Small", "body": "s", "price": "1"},
        timeout=30,
    )
    assert ok.status_code == 202, ok.text


def test_a_message_that_kills_its_worker_every_time_is_dead_lettered_by_sqs(
    sqs: Sqs, process_env: dict[str, str], log_dir: Path, workers: list[Process]
) -> None:
    # Given queues with a redrive policy of 2 receives, and a visibility timeout of 3 s
    queue = sqs.new_queue()
    env = {
        **process_env,
        **sqs.env(),
        "MESSENGER_QUEUE": queue,
        "MESSENGER_SQS_VISIBILITY_TIMEOUT": "3",
        "MESSENGER_SQS_MAX_RECEIVES": "2",
    }
    deadly, deadly_message = envelope_message(
        queue, "tests.testapp.handlers.work", Work(n=1, sleep_ms=60_000)
    )
    enqueue_with(sqs, env, deadly_message)

    # When each worker that receives it dies while handling it (SIGKILL), twice
    for attempt in (1, 2):
        worker = start_worker(env, log_dir, queues=[queue], threads=1)
        workers.append(worker)
        wait_for(
            lambda attempt=attempt: (
                Effect.objects.filter(handler="work-started", message_id=deadly.message_id).count() >= attempt
            ),
            timeout=60,
            what=f"delivery {attempt} to start",
        )
        worker.kill()

    # Then SQS moves it to the dead-letter queue instead of delivering it a third time,
    # and the next worker goes on with other messages
    good, good_message = envelope_message(queue, "tests.testapp.handlers.handle", Ping(text="after it"))
    enqueue_with(sqs, env, good_message)
    workers.append(start_worker(env, log_dir, queues=[queue], threads=1))
    wait_for(lambda: Effect.objects.filter(message_id=good.message_id).exists(), timeout=60, what="the ping")
    wait_for(lambda: sqs.dead_letters(queue) == 1, timeout=30, what="the deadly message dead-lettered")
    assert Effect.objects.filter(handler="work-started", message_id=deadly.message_id).count() == 2
    assert not Effect.objects.filter(handler="work", message_id=deadly.message_id).exists()


def enqueue_with(sqs: Sqs, env: dict[str, Any], *messages: Any) -> None:
    """Enqueue as the processes of ``env`` would: their queues get their redrive policy."""
    client = SQSBroker(
        endpoint_url=sqs.url(),
        middleware=[],
        region_name="us-east-1",
        max_receives=int(env["MESSENGER_SQS_MAX_RECEIVES"]),
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    for message in messages:
        client.declare_queue(message.queue_name)
        client.enqueue(message)
