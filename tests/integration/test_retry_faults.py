"""Retries under a RabbitMQ resource alarm: a real worker whose retries cannot be enqueued.

While a memory alarm blocks every publisher, a failing handler's retry and a fan-out's
re-sends cannot reach RabbitMQ, yet the worker can still ack. Each such message must be
dead-lettered and stored in the failure store (not acked and dropped), so that once the
alarm is over ``messenger_failed retry`` delivers it: 0 messages lost.

A publish that timed out on a blocked connection may still reach RabbitMQ when the alarm
clears (it reads what the socket had buffered): such a retry then runs too. That is
at-least-once delivery, so the test asks that every handler got every message, not that
it got it exactly once.
"""

from __future__ import annotations

import time
import uuid

import pytest

from django_messenger.models import FailedMessage
from django_messenger.retries import RETRY_NOT_ENQUEUED
from django_messenger.transports.dramatiq.binding import FANOUT_PREFIX
from tests.testapp.messages import Flaky, Shout
from tests.testapp.models import Effect

from .alarms import memory_alarm
from .processes import manage, start_worker, wait_for
from .rabbit import confirming_broker, envelope_message

pytestmark = pytest.mark.django_db(transaction=True)

FLAKY = "tests.testapp.handlers.flaky"


def test_under_a_resource_alarm_no_message_whose_retry_fails_is_lost(
    own_queue, process_env, log_dir, workers
):
    env = {
        **process_env,
        "MESSENGER_QUEUE": own_queue,
        "MESSENGER_PUBLISH_TIMEOUT": "1",  # a fan-out's re-send gives up after 1 s
        "MESSENGER_BLOCKED_CONNECTION_TIMEOUT": "0.5",  # each of Dramatiq's enqueue attempts after 0.5 s
    }
    # Given fan-out messages (two handlers each) and messages whose handler fails, on the queue
    fanout = FANOUT_PREFIX + own_queue
    shouts = [envelope_message(own_queue, fanout, Shout(text=f"shout {n}")) for n in range(2)]
    flakies = [envelope_message(own_queue, FLAKY, Flaky(text=f"flaky {uuid.uuid4()}")) for n in range(2)]
    broker = confirming_broker(own_queue)
    try:
        for _, message in shouts + flakies:
            broker.enqueue(message)
    finally:
        broker.close()
    ids = {envelope.message_id for envelope, _ in shouts + flakies}

    def stored() -> dict[uuid.UUID, FailedMessage]:
        return {failed.message_id: failed for failed in FailedMessage.objects.filter(message_id__in=ids)}

    # When a worker processes them while a memory alarm blocks every publisher
    with memory_alarm():
        alarm_on = time.monotonic()
        workers.append(start_worker(env, log_dir, queues=[own_queue], threads=4))
        failures = wait_for(
            lambda: len(stored()) == len(ids) and stored(),
            timeout=30,
            what="every message in the failure store",
        )
        # Printed for docs/reliability.md (run with -s to see it).
        print(f"[fault test] memory alarm: all {len(ids)} stored {time.monotonic() - alarm_on:.1f}s into it")

    # Then none was acked and dropped: each is in the failure store, saying that its retry failed
    assert sorted(failed.handler for failed in failures.values()) == sorted([fanout, fanout, FLAKY, FLAKY])
    assert all(failed.error.startswith(RETRY_NOT_ENQUEUED) for failed in failures.values())

    # When the alarm is over and the cause is fixed, retrying what the store holds
    for envelope, _ in flakies:
        Effect.objects.create(
            handler="fixed", message_id=uuid.uuid4(), payload={"text": envelope.message.text}
        )
    expected = {(name, envelope.message_id) for envelope, _ in shouts for name in ("shout_one", "shout_two")}
    expected |= {("flaky", envelope.message_id) for envelope, _ in flakies}

    def every_handler_got_every_message() -> bool:
        if FailedMessage.objects.exists():  # a leaked retry may have failed before the fix: retry it too
            retried = manage(env, "messenger_failed", "retry", "--all")
            assert retried.returncode == 0, retried.stderr
        done = set(Effect.objects.exclude(handler="fixed").values_list("handler", "message_id"))
        return expected <= done

    # Then every handler got every message: 0 lost
    wait_for(
        every_handler_got_every_message, timeout=60, interval=1, what="every handler to get every message"
    )
