"""Workers killed with SIGKILL lose nothing; SIGTERM lets the handler in progress finish."""

from __future__ import annotations

import pytest
from django.db.models import Count

from tests.testapp.messages import Work
from tests.testapp.models import Effect

from .processes import start_worker, wait_for
from .rabbit import confirming_broker, envelope_message

pytestmark = pytest.mark.django_db(transaction=True)

WORK = "tests.testapp.handlers.work"
MESSAGES = 1000
KILL_AT = (150, 450)


def handled() -> int:
    return Effect.objects.filter(handler="work").values("message_id").distinct().count()


def test_sigkill_mid_run_loses_no_message(own_queue, process_env, log_dir, workers, capsys):
    env = {**process_env, "MESSENGER_QUEUE": own_queue}
    # Given 1000 messages on the queue, each taking a few milliseconds to handle
    broker = confirming_broker(own_queue)
    sent = set()
    try:
        for n in range(MESSAGES):
            envelope, message = envelope_message(own_queue, WORK, Work(n=n, sleep_ms=5))
            broker.enqueue(message)
            sent.add(envelope.message_id)
    finally:
        broker.close()

    # When a worker is SIGKILLed mid-run, twice, and a new one started each time
    killed = 0
    for threshold in KILL_AT:
        worker = start_worker(env, log_dir, queues=[own_queue], processes=2, threads=4)
        workers.append(worker)
        wait_for(lambda threshold=threshold: handled() >= threshold, timeout=120, what=f"{threshold} handled")
        worker.kill()
        killed += 1
    workers.append(start_worker(env, log_dir, queues=[own_queue], processes=2, threads=4))

    # Then every message is handled, at least once
    wait_for(lambda: handled() >= MESSAGES, timeout=180, what="every message to be handled")
    seen = set(Effect.objects.filter(handler="work").values_list("message_id", flat=True))
    lost = sent - seen
    rows = Effect.objects.filter(handler="work").count()
    duplicates = rows - len(seen)
    twice = Effect.objects.filter(handler="work").values("message_id").annotate(n=Count("id")).filter(n__gt=1)
    with capsys.disabled():
        print(
            f"\n[crash test] messages sent={len(sent)} workers killed={killed} "
            f"lost={len(lost)} handled={len(seen)} duplicate handlings={duplicates} "
            f"(messages handled twice or more: {twice.count()})"
        )
    assert lost == set()
    assert seen == sent


def test_sigterm_lets_the_handler_in_progress_finish(own_queue, process_env, log_dir, workers):
    env = {**process_env, "MESSENGER_QUEUE": own_queue}
    worker = start_worker(env, log_dir, queues=[own_queue], processes=1, threads=1)
    workers.append(worker)
    broker = confirming_broker(own_queue)
    try:
        envelope, message = envelope_message(own_queue, WORK, Work(n=1, sleep_ms=2500))
        broker.enqueue(message)
    finally:
        broker.close()
    wait_for(
        lambda: Effect.objects.filter(handler="work-started", message_id=envelope.message_id).exists(),
        what="the handler to start",
    )

    # When the worker is asked to stop while the handler runs
    returncode = worker.stop(timeout=30)

    # Then it exits only after the handler finished
    assert returncode is not None, "the worker did not exit within its grace period"
    assert Effect.objects.filter(handler="work", message_id=envelope.message_id).count() == 1
