"""SQS beyond the contract suite: a write larger than SQS takes is a 413, never a 503 or a 500.

The contract suite (tests/integration/contract/) runs every broker's common cases on SQS too;
this file holds what only SQS has: a size limit of its own, below messenger's default
MAX_MESSAGE_SIZE (W009), measured on the base64 text dramatiq-sqs sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .contract.brokers import Sqs
from .processes import start_server

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
