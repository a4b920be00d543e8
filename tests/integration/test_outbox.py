"""The transactional outbox with real processes: a gunicorn server whose writes are outbox rows,
``rundramatiq`` workers whose relay threads publish them to RabbitMQ through a FaultProxy, and
``manage.py messenger_relay`` beside them.

While RabbitMQ is unreachable for 30 s a client posts at a steady rate: every POST answers 202
(the row is committed), and after recovery a real worker handles every message (0 lost). With
three relays at once (two worker processes and the command) and no fault, every message is
handled exactly once: PostgreSQL's SKIP LOCKED gives each row to one relay.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from django_messenger.models import OutboxMessage
from tests.faultproxy import FaultProxy
from tests.testapp.models import Effect

from .conftest import delete_queues
from .processes import Process, start, start_server, start_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE = 30.0
#: POSTs a second while the broker is away.
RATE = 4.0


@pytest.fixture(scope="module")
def proxy(rabbitmq: str) -> Iterator[FaultProxy]:
    with FaultProxy() as fault_proxy:
        yield fault_proxy


@pytest.fixture(scope="module")
def outbox_env(process_env: dict[str, str], proxy: FaultProxy) -> Iterator[dict[str, str]]:
    """Processes with an outbox on a queue of this module, whose broker is behind ``proxy``."""
    queue = f"messenger-outbox-{uuid.uuid4().hex[:12]}"
    yield {
        **process_env,
        "MESSENGER_QUEUE": queue,
        "MESSENGER_OUTBOX": "1",
        "MESSENGER_OUTBOX_POLL_INTERVAL": "0.2",
        "MESSENGER_PUBLISH_TIMEOUT": "2",
        "MESSENGER_BROKER_URL": proxy.url().rsplit("/", 1)[0],
    }
    delete_queues(queue)


@pytest.fixture(scope="module")
def outbox_server(outbox_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    process, url = start_server(outbox_env, log_dir, wsgi="tests.integration.wsgi:application", threads=4)
    yield url
    process.stop()


@pytest.fixture
def started() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.stop()


@pytest.fixture(autouse=True)
def healthy(proxy: FaultProxy) -> Iterator[None]:
    proxy.restore()
    yield
    proxy.restore()


def post(url: str, text: str) -> uuid.UUID:
    response = requests.post(f"{url}/pings/", json={"text": text}, timeout=30)
    assert response.status_code == 202, (text, response.status_code, response.text)
    return uuid.UUID(response.headers["Messenger-Message-Id"])


def handled(ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many times the ``ping`` handler ran for each of ``ids``."""
    counts = dict.fromkeys(ids, 0)
    for message_id in Effect.objects.filter(handler="ping", message_id__in=ids).values_list(
        "message_id", flat=True
    ):
        counts[message_id] += 1
    return counts


def test_every_write_is_202_while_the_broker_is_down_and_every_message_is_handled_after(
    outbox_env, outbox_server, proxy, log_dir, started
):
    # Given a worker (its relay thread included) whose broker is reachable
    started.append(start_worker(outbox_env, log_dir, queues=[outbox_env["MESSENGER_QUEUE"]], threads=2))
    ids = [post(outbox_server, "before")]
    wait_for(lambda: all(handled(ids).values()), timeout=60, what="the first message to be handled")

    # When RabbitMQ is unreachable for 30 s while a client posts at a steady rate
    proxy.reset()
    began = time.monotonic()
    during: list[uuid.UUID] = []
    while time.monotonic() - began < OUTAGE:
        sent_at = time.monotonic()
        during.append(post(outbox_server, f"during {len(during)}"))  # Then every POST answers 202
        time.sleep(max(0.0, 1 / RATE - (time.monotonic() - sent_at)))
    # ... and the messages wait in the outbox: the relay could publish none of them
    unsent = OutboxMessage.objects.filter(message_id__in=during, sent_at__isnull=True).count()
    print(f"[outbox fault test] {len(during)} POSTs during {OUTAGE:g} s, all 202; {unsent} rows unsent")
    assert unsent == len(during)
    assert not any(handled(during).values())

    # When RabbitMQ is reachable again
    proxy.restore()
    ids += during
    ids.append(post(outbox_server, "after"))

    # Then every message is handled (none lost), with no restart
    wait_for(
        lambda: all(handled(ids).values()), timeout=120, interval=0.5, what="every message to be handled"
    )
    counts = handled(ids)
    assert all(count >= 1 for count in counts.values())
    print(f"[outbox fault test] {len(ids)} handled, {sum(counts.values()) - len(ids)} duplicate deliveries")
    assert OutboxMessage.objects.filter(message_id__in=ids, sent_at__isnull=True).count() == 0


def test_three_relays_at_once_publish_each_message_once(outbox_env, outbox_server, log_dir, started):
    # Given two worker processes (a relay thread each) and a messenger_relay process, all polling
    started.append(
        start_worker(outbox_env, log_dir, queues=[outbox_env["MESSENGER_QUEUE"]], processes=2, threads=2)
    )
    started.append(
        start(
            "relay",
            [sys.executable, "manage.py", "messenger_relay"],
            {**outbox_env, "PYTHONUNBUFFERED": "1"},
            log_dir,
        )
    )

    # When a client posts 200 writes
    ids = [post(outbox_server, f"raced {number}") for number in range(200)]

    # Then every message is handled exactly once
    wait_for(
        lambda: all(handled(ids).values()), timeout=120, interval=0.5, what="every message to be handled"
    )
    time.sleep(2)  # a second publish of a row would be handled within this
    counts = handled(ids)
    assert sorted(set(counts.values())) == [1], {k: v for k, v in counts.items() if v != 1}
    assert "The outbox relay started" in started[1].log()
