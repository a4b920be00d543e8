"""The failure store while PostgreSQL is unreachable: a real worker, a real database behind a FaultProxy.

A database outage is what makes handlers fail in the first place, so the failure store must
not need the database at the moment a message fails for good: the failure is held on the
broker and recorded when the database is back (see docs/reliability.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from django_messenger.models import FailedMessage
from tests.faultproxy import FaultProxy
from tests.testapp.messages import Flaky
from tests.testapp.models import Effect

from .processes import manage, start_worker, wait_for
from .rabbit import confirming_broker, envelope_message

pytestmark = pytest.mark.django_db(transaction=True)

FLAKY = "tests.testapp.handlers.flaky"
HELD = "could not be stored ("


@pytest.fixture
def database_proxy() -> Iterator[FaultProxy]:
    """A FaultProxy in front of PostgreSQL, for the worker only (the test talks to it directly)."""
    with FaultProxy(upstream=("127.0.0.1", 5432)) as proxy:
        yield proxy


def test_a_failure_while_the_database_is_down_is_stored_once_it_is_back(
    own_queue, process_env, log_dir, workers, database_proxy
):
    # Given a worker whose database connection runs through the proxy
    env = {
        **process_env,
        "MESSENGER_QUEUE": own_queue,
        "MESSENGER_TEST_DB_HOST": "127.0.0.1",
        "MESSENGER_TEST_DB_PORT": str(database_proxy.port),
    }
    worker = start_worker(env, log_dir, queues=[own_queue], threads=2)
    workers.append(worker)

    # When PostgreSQL becomes unreachable from it, and a handler fails for good meanwhile
    database_proxy.reset()
    envelope, message = envelope_message(own_queue, FLAKY, Flaky(text=f"outage {uuid.uuid4()}"))
    broker = confirming_broker(own_queue)
    try:
        broker.enqueue(message)
    finally:
        broker.close()

    # Then its failure is held, again and again while the database stays down
    def holds() -> int:
        return sum(1 for line in worker.log().splitlines() if "[django_messenger]" in line and HELD in line)

    wait_for(lambda: holds() >= 2, timeout=30, what="the failure to be held twice")
    assert not FailedMessage.objects.filter(message_id=envelope.message_id).exists()

    # When the database is back
    database_proxy.restore()

    # Then the failure is stored, once, and `messenger_failed` lists it
    failed = wait_for(
        lambda: FailedMessage.objects.filter(message_id=envelope.message_id).first(),
        timeout=30,
        what="the failure to be stored",
    )
    assert failed.handler == FLAKY and failed.tries == 2
    assert "OperationalError" in failed.error
    listing = manage(env, "messenger_failed", "list")
    assert listing.returncode == 0, listing.stderr
    assert str(envelope.message_id) in listing.stdout

    # And `retry`, once the cause is fixed, has the handler handle it
    Effect.objects.create(handler="fixed", message_id=uuid.uuid4(), payload={"text": envelope.message.text})
    retried = manage(env, "messenger_failed", "retry", str(envelope.message_id))
    assert retried.returncode == 0, retried.stderr
    wait_for(
        lambda: Effect.objects.filter(handler="flaky", message_id=envelope.message_id).exists(),
        what="the retried message to be handled",
    )
    assert FailedMessage.objects.filter(message_id=envelope.message_id).count() == 0
