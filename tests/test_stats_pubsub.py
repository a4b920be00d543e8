"""messenger_stats on Pub/Sub: rows of unknown counts that name the subscriptions to look at."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from django_messenger import stats
from django_messenger.brokers.pubsub import PubSubBroker
from django_messenger.stats import pubsub as reader
from django_messenger.transports.dramatiq.binding import binding


def test_each_queue_has_unknown_counts_and_names_its_subscriptions() -> None:
    broker = PubSubBroker(project_id="my-project", namespace="shop", middleware=[])

    [row] = reader.read(broker, ["mail"], timeout=1.0)

    assert (row.queue, row.ready, row.in_flight, row.delayed, row.dead_lettered) == (
        "mail",
        None,
        None,
        None,
        None,
    )
    assert "shop.mail, shop.mail.DQ, shop.mail.XQ" in row.notes[0]


def test_a_broker_without_project_id_says_so_in_the_note() -> None:
    [row] = reader.read(PubSubBroker(middleware=[]), ["mail"], timeout=1.0)

    assert "project_id is None" in row.notes[0]


@pytest.mark.django_db
def test_messenger_stats_lists_pubsub_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = PubSubBroker(project_id="my-project", middleware=[])
    monkeypatch.setattr(binding, "_broker", broker)
    assert stats.reader_for(broker) is reader

    out = StringIO()
    call_command("messenger_stats", "--json", stdout=out)

    found = json.loads(out.getvalue())
    queues: list[dict[str, Any]] = found["queues"]
    assert queues and all(q["ready"] is None for q in queues)
    assert all("num_undelivered_messages" in q["notes"][0] for q in queues)
