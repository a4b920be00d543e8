"""`messenger_failed retry` processes racing on one failure, on real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from django.db import connection, transaction

from django_messenger.models import FailedMessage
from tests.faultproxy import FaultProxy
from tests.testapp.messages import Flaky

from .processes import ROOT, Process, start_worker, wait_for
from .rabbit import confirming_broker, envelope_message, queue_depth

pytestmark = pytest.mark.django_db(transaction=True)

FLAKY = "tests.testapp.handlers.flaky"


@pytest.fixture
def failure(own_queue, process_env, log_dir) -> Iterator[tuple[FailedMessage, dict[str, str]]]:
    """A failure stored by a real worker (which is stopped then), and the env of processes on its queue."""
    env = {**process_env, "MESSENGER_QUEUE": own_queue}
    worker: Process = start_worker(env, log_dir, queues=[own_queue], processes=1, threads=1)
    try:
        broker = confirming_broker(own_queue)
        try:
            envelope, message = envelope_message(own_queue, FLAKY, Flaky(text=f"race {uuid.uuid4()}"))
            broker.enqueue(message)
        finally:
            broker.close()
        stored = wait_for(
            lambda: FailedMessage.objects.filter(message_id=envelope.message_id).first(), what="the failure"
        )
    finally:
        worker.stop()
    assert queue_depth(own_queue) == 0
    yield stored, env


def start_retry(env: dict[str, str], message_id: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "messenger_failed", "retry", str(message_id)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out + err


def waiting_deletes() -> int:
    """How many sessions of the test database wait on a lock in a DELETE (a retry's claim)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # a transaction sees one snapshot otherwise
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE %s",
            ["DELETE%"],
        )
        (count,) = cursor.fetchone()
    return int(count)


def test_two_retries_that_both_found_the_failure_send_it_once(failure, own_queue):
    failed, env = failure
    # Given two retry processes that both read the failure, then wait on its row lock
    with transaction.atomic():
        FailedMessage.objects.select_for_update().get(pk=failed.pk)
        first, second = start_retry(env, failed.message_id), start_retry(env, failed.message_id)
        wait_for(lambda: waiting_deletes() == 2, timeout=60, what="both retries to wait on the row")
    # When the lock is released, they race

    # Then one sends it, and the other is told it is gone and exits non-zero
    results = sorted([finish(first), finish(second)])
    [(won, won_output), (lost, lost_output)] = results
    assert won == 0, won_output
    assert "sent again" in won_output
    assert lost != 0, lost_output
    assert f"Failed message {failed.message_id} was already retried or removed." in lost_output
    assert queue_depth(own_queue) == 1
    assert not FailedMessage.objects.filter(pk=failed.pk).exists()


def test_a_retry_whose_publish_hangs_keeps_the_failure_for_a_concurrent_retry(failure, own_queue):
    failed, env = failure
    with FaultProxy() as proxy:
        # Given a retry whose broker swallows everything: it holds the row while its publish hangs
        proxy.blackhole()
        hanging = start_retry(
            {**env, "MESSENGER_BROKER_URL": proxy.url(), "MESSENGER_PUBLISH_TIMEOUT": "3"}, failed.message_id
        )
        wait_for(lambda: proxy.accepted >= 1, timeout=60, what="the first retry to publish")

        # When a second retry, on the real broker, asks for the same failure
        second = start_retry(env, failed.message_id)
        wait_for(lambda: waiting_deletes() == 1, timeout=60, what="the second retry to wait on the row")

        # Then the first gives up within PUBLISH_TIMEOUT, its delete rolled back: the row stays
        code, output = finish(hanging)
        assert code != 0, output
        assert "could not be retried" in output

    # ... and the second retry sends it, once
    code, output = finish(second)
    assert code == 0, output
    assert queue_depth(own_queue) == 1
    assert not FailedMessage.objects.filter(pk=failed.pk).exists()
