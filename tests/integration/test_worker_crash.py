"""Workers killed with SIGKILL lose nothing (and an idempotent handler's effects happen once);
SIGTERM lets the handler in progress finish."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db.models import Count

from django_messenger.models import HandledMessage
from tests.testapp.messages import IdempotentWork, Work
from tests.testapp.models import Effect

from .processes import Process, start_worker, wait_for
from .rabbit import confirming_broker, envelope_message, queue_depth

pytestmark = pytest.mark.django_db(transaction=True)

WORK = "tests.testapp.handlers.work"
WORK_ONCE = "tests.testapp.handlers.work_once"
MESSAGES = 1000
KILL_AT = (150, 450)
#: What a worker logs when it acknowledges a message its idempotent handler already handled.
ALREADY_HANDLED = "was already handled by"


def handled(effect: str = "work") -> int:
    return Effect.objects.filter(handler=effect).values("message_id").distinct().count()


def skipped(started: list[Process], actor_name: str) -> int:
    """How many redeliveries the workers acknowledged without running ``actor_name``'s handler.

    Counted on Dramatiq's log lines (``[django_messenger]``): a worker process's log record also
    reaches the log file through the settings' console handler, unformatted.
    """
    return sum(
        1
        for worker in started
        for line in worker.log().splitlines()
        if "[django_messenger]" in line and f"{ALREADY_HANDLED} {actor_name}:" in line
    )


#: (the handler's actor, its Effect rows' name, the message of n, whether it is idempotent)
HANDLERS: dict[str, tuple[str, str, Callable[[int], Any], bool]] = {
    "at-least-once": (WORK, "work", lambda n: Work(n=n, sleep_ms=5), False),
    "idempotent": (WORK_ONCE, "work_once", lambda n: IdempotentWork(n=n, sleep_ms=5), True),
}


@pytest.mark.parametrize("kind", list(HANDLERS))
def test_sigkill_mid_run_loses_no_message(kind, own_queue, process_env, log_dir, workers, capsys):
    actor_name, effect, message_of, idempotent = HANDLERS[kind]
    env = {**process_env, "MESSENGER_QUEUE": own_queue}
    # Given 1000 messages on the queue, each taking a few milliseconds to handle
    broker = confirming_broker(own_queue)
    sent = set()
    try:
        for n in range(MESSAGES):
            envelope, message = envelope_message(own_queue, actor_name, message_of(n))
            broker.enqueue(message)
            sent.add(envelope.message_id)
    finally:
        broker.close()

    # When a worker is SIGKILLed mid-run, twice, and a new one started each time
    killed = 0
    started: list[Process] = []
    for threshold in KILL_AT:
        worker = start_worker(env, log_dir, queues=[own_queue], processes=2, threads=4)
        workers.append(worker)
        started.append(worker)
        wait_for(
            lambda threshold=threshold: handled(effect) >= threshold, timeout=120, what=f"{threshold} handled"
        )
        worker.kill()
        killed += 1
    last = start_worker(env, log_dir, queues=[own_queue], processes=2, threads=4)
    workers.append(last)
    started.append(last)

    # Then every message is handled, at least once (exactly once for an idempotent handler)
    wait_for(lambda: handled(effect) >= MESSAGES, timeout=180, what="every message to be handled")
    wait_for(lambda: own_queue_is_empty(own_queue), timeout=60, what="the queue to be empty")
    seen = set(Effect.objects.filter(handler=effect).values_list("message_id", flat=True))
    lost = sent - seen
    rows = Effect.objects.filter(handler=effect).count()
    duplicates = rows - len(seen)
    twice = Effect.objects.filter(handler=effect).values("message_id").annotate(n=Count("id")).filter(n__gt=1)
    redelivered = skipped(started, actor_name)
    with capsys.disabled():
        print(
            f"\n[crash test, {kind}] messages sent={len(sent)} workers killed={killed} "
            f"lost={len(lost)} handled={len(seen)} duplicate effects={duplicates} "
            f"(messages handled twice or more: {twice.count()}) "
            f"redeliveries acknowledged without running the handler={redelivered}"
        )
    assert lost == set()
    assert seen == sent
    if idempotent:
        assert duplicates == 0
        assert HandledMessage.objects.filter(handler=actor_name).count() == MESSAGES
    else:
        assert redelivered == 0


def own_queue_is_empty(queue: str) -> bool:
    return queue_depth(queue) == 0 and queue_depth(f"{queue}.DQ") == 0


def test_a_message_redelivered_after_its_handler_committed_is_not_handled_again(
    own_queue, process_env, log_dir, workers
):
    env = {**process_env, "MESSENGER_QUEUE": own_queue}
    # Given an idempotent handler whose worker holds the message 60 s after the commit, before the ack
    worker = start_worker(env, log_dir, queues=[own_queue], processes=1, threads=1)
    workers.append(worker)
    broker = confirming_broker(own_queue)
    try:
        envelope, message = envelope_message(own_queue, WORK_ONCE, IdempotentWork(n=1, hold_ms=60_000))
        broker.enqueue(message)
    finally:
        broker.close()
    wait_for(
        lambda: Effect.objects.filter(handler="work_once", message_id=envelope.message_id).exists(),
        timeout=60,
        what="the handler's commit",
    )

    # When the worker is SIGKILLed in that window, and a new one started
    worker.kill()
    second = start_worker(env, log_dir, queues=[own_queue], processes=1, threads=1)
    workers.append(second)

    # Then RabbitMQ redelivers the message, and the new worker acknowledges it without running the handler
    wait_for(lambda: skipped([second], WORK_ONCE) == 1, timeout=60, what="the redelivery to be acknowledged")
    wait_for(lambda: own_queue_is_empty(own_queue), timeout=30, what="the queue to be empty")
    assert f"Message {envelope.message_id} {ALREADY_HANDLED} {WORK_ONCE}" in second.log()
    assert Effect.objects.filter(handler="work_once", message_id=envelope.message_id).count() == 1
    assert HandledMessage.objects.filter(message_id=envelope.message_id).count() == 1


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
