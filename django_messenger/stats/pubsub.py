"""The reader of messenger's PubSubBroker: Pub/Sub's API counts no messages, so every count is unknown.

Pub/Sub tells a subscription's backlog only through Cloud Monitoring
(``pubsub.googleapis.com/subscription/num_undelivered_messages``, a few minutes late; the emulator
has none). The reader asks nothing: each queue's row has ``null`` counts and a note naming the
subscriptions to look at there, so that ``messenger_stats`` still lists the queues beside the
failures per handler, which come from the failure store as on every broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dramatiq.common import dq_name, xq_name

from . import QueueStats

#: The note of every Pub/Sub queue's row.
NO_COUNTS_NOTE = (
    "Pub/Sub's API counts no messages: see Cloud Monitoring's subscription/num_undelivered_messages "
    "of the subscriptions {subscriptions}"
)


def read(broker: Any, queues: Sequence[str], *, timeout: float) -> list[QueueStats]:
    """A row of unknown counts a queue, naming its three subscriptions (no call to Pub/Sub)."""
    rows = []
    for name in queues:
        try:
            subscriptions = ", ".join(
                broker.subscription_path(queue).rpartition("/")[2]
                for queue in (name, dq_name(name), xq_name(name))
            )
        except ValueError as exc:  # no project id (E019), or a name Pub/Sub refuses
            note = str(exc)
        else:
            note = NO_COUNTS_NOTE.format(subscriptions=subscriptions)
        rows.append(
            QueueStats(
                queue=name, ready=None, in_flight=None, delayed=None, dead_lettered=None, notes=(note,)
            )
        )
    return rows
