"""The reader of messenger's SQSBroker: each queue's approximate counts from GetQueueAttributes.

SQS keeps three counts a queue, all approximate (eventually consistent, up to a minute late):
``ApproximateNumberOfMessages`` (ready), ``ApproximateNumberOfMessagesNotVisible`` (received
by a worker, not deleted yet: in flight) and ``ApproximateNumberOfMessagesDelayed`` (sent
with a delay not yet over). Dead-lettered = every message of the queue's dead-letter queue
(``<queue>_dlq``, ready, in flight or delayed): where Dramatiq's dead letters and SQS's
redrive policy both put them.

The reader asks SQS with a client of its own, one attempt a call, each call bounded by half
the timeout and none started after it; it never creates a queue (a queue not created yet is
counted as empty, with a note).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..brokers.sqs import DEAD_LETTER_SUFFIX
from . import QueueStats, StatsUnavailable

#: The note of every SQS queue's counts.
APPROXIMATE_NOTE = "SQS's counts are approximate (up to a minute late)"
#: The note of a queue SQS does not have (no message was sent to it yet).
MISSING_NOTE = "not created on SQS yet"
#: The note of a queue without a dead-letter queue.
NO_DEAD_LETTER_NOTE = f"no dead-letter queue ({DEAD_LETTER_SUFFIX})"

COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


def bounded_client(broker: Any, timeout: float) -> Any:
    """An SQS client with the broker's options whose every call ends within ``timeout`` s."""
    options = dict(getattr(broker, "client_options", {}))
    given = options.pop("config", None)
    half = max(timeout / 2, 0.1)
    config = Config(connect_timeout=half, read_timeout=half, retries={"total_max_attempts": 1})
    return boto3.session.Session().client("sqs", config=given.merge(config) if given else config, **options)


class _Asker:
    def __init__(self, client: Any, timeout: float) -> None:
        self.client = client
        self.deadline = time.monotonic() + timeout

    def _check(self) -> None:
        if time.monotonic() > self.deadline:
            raise StatsUnavailable("SQS did not answer in time (the stats took longer than their timeout).")

    def counts(self, name: str) -> tuple[int, int, int] | None:
        """The three counts of the SQS queue ``name``; None when it does not exist."""
        self._check()
        try:
            url = self.client.get_queue_url(QueueName=name)["QueueUrl"]
        except self.client.exceptions.QueueDoesNotExist:
            return None
        self._check()
        try:
            found = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=COUNTS)["Attributes"]
        except self.client.exceptions.QueueDoesNotExist:  # deleted between the two calls
            return None
        ready, invisible, delayed = (int(found.get(key, 0)) for key in COUNTS)
        return ready, invisible, delayed


def _sqs_name(broker: Any, queue: str) -> str:
    return f"{broker.namespace}_{queue}" if broker.namespace else queue


def read(broker: Any, queues: Sequence[str], *, timeout: float) -> list[QueueStats]:
    asker = _Asker(bounded_client(broker, timeout), timeout)
    stats = []
    try:
        for queue in queues:
            name = _sqs_name(broker, queue)
            counts = asker.counts(name)
            dead = asker.counts(name + DEAD_LETTER_SUFFIX)
            notes = [APPROXIMATE_NOTE]
            if counts is None:
                notes.append(MISSING_NOTE)
            elif dead is None:
                notes.append(NO_DEAD_LETTER_NOTE)
            ready, in_flight, delayed = counts or (0, 0, 0)
            stats.append(
                QueueStats(
                    queue=queue,
                    ready=ready,
                    in_flight=in_flight,
                    delayed=delayed,
                    dead_lettered=sum(dead) if dead is not None else (0 if counts is None else None),
                    notes=tuple(notes),
                )
            )
    except (BotoCoreError, ClientError) as exc:
        # botocore's texts name the endpoint (and a ClientError the account's queue URL): only
        # the kind of error is shown.
        raise StatsUnavailable(f"SQS did not answer ({type(exc).__name__}).") from exc
    finally:
        asker.client.close()
    return stats
