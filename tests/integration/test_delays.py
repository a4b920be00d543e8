"""A delay longer than a hop, through a real server, RabbitMQ and ``rundramatiq`` worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.testapp.models import Effect

from .processes import start_server, start_worker

pytestmark = pytest.mark.django_db(transaction=True)

HOP = 2.0
DELAY = 7.0


@pytest.fixture
def hopping(own_queue, process_env, log_dir, workers) -> Iterator[tuple[str, object]]:
    """A server and a worker on a queue of their own, with a 2 s DELAY_HOP and hops logged."""
    env = {
        **process_env,
        "MESSENGER_QUEUE": own_queue,
        "MESSENGER_DELAY_HOP": str(HOP),
        "MESSENGER_LOG_LEVEL": "DEBUG",
    }
    worker = start_worker(env, log_dir, queues=[own_queue], processes=1, threads=2)
    workers.append(worker)
    server, url = start_server(env, log_dir, wsgi="tests.integration.wsgi:application", threads=2)
    try:
        yield url, worker
    finally:
        server.stop()


def test_a_delay_of_several_hops_is_handled_once_when_due(hopping):
    url, worker = hopping

    # Given a 2 s hop, when a ping is POSTed with a 7 s delay
    sent_at = time.monotonic()
    response = requests.post(
        f"{url}/delayed-pings/?delay_ms={int(DELAY * 1000)}", json={"text": "later"}, timeout=15
    )
    assert response.status_code == 202
    message_id = uuid.UUID(response.headers["Messenger-Message-Id"])
    due = sent_at + DELAY

    # Then the handler has not run until it is due ...
    last_absent = sent_at
    while time.monotonic() < due + 10:
        looked_at = time.monotonic()
        if Effect.objects.filter(message_id=message_id).exists():
            break
        last_absent = looked_at
        time.sleep(0.05)
    seen_at = time.monotonic()
    assert Effect.objects.filter(message_id=message_id).exists(), f"never handled:\n{worker.log()}"
    print(
        f"\ndelay {DELAY} s in hops of {HOP} s: handled between {last_absent - sent_at:.2f} s "
        f"and {seen_at - sent_at:.2f} s after the POST"
    )
    assert last_absent >= due - 0.5, "handled before it was due"
    # ... and within a few seconds after
    # (a few: the last hop waits for the worker's 1 s poll, and a memory alarm raised by another
    # test on this machine blocks every publisher for a few seconds)
    assert seen_at <= due + 5, f"handled {seen_at - due:.2f} s late:\n{worker.log()}"
    # once, after the worker sent it on hop by hop (7 s = 2 + 2 + 2 + 1)
    time.sleep(1.5)
    assert Effect.objects.filter(message_id=message_id).count() == 1
    assert worker.log().count("is not due yet") >= 3
