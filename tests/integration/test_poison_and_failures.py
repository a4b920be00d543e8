"""Poison messages published straight to RabbitMQ, and `messenger_failed` against a real worker."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from dramatiq import Message

from django_messenger.models import FailedMessage
from tests.testapp.messages import Flaky, Ping
from tests.testapp.models import Effect

from .processes import Process, manage, start_worker, wait_for
from .rabbit import (
    confirming_broker,
    envelope_message,
    publish_raw,
    queue_bodies,
    queue_depth,
    send_good_message,
)

pytestmark = pytest.mark.django_db(transaction=True)

PING = "tests.testapp.handlers.handle"
FLAKY = "tests.testapp.handlers.flaky"


@pytest.fixture
def own_worker(own_queue, process_env, log_dir) -> Iterator[tuple[Process, dict[str, str]]]:
    env = {**process_env, "MESSENGER_QUEUE": own_queue}
    worker = start_worker(env, log_dir, queues=[own_queue], processes=1, threads=2)
    yield worker, env
    worker.stop()


def dramatiq_body(queue: str, actor: str, payload: object) -> bytes:
    message: Message[object] = Message(
        queue_name=queue, actor_name=actor, args=(payload,), kwargs={}, options={}
    )
    return message.encode()


def test_poison_messages_are_dead_lettered_and_the_worker_goes_on(own_queue, own_worker):
    worker, _ = own_worker
    envelope_id = str(uuid.uuid4())
    poison = {
        "unknown type": dramatiq_body(
            own_queue, PING, {"v": 1, "id": envelope_id, "type": "os.system", "body": {}, "stamps": []}
        ),
        "body that does not fit": dramatiq_body(
            own_queue,
            PING,
            {"v": 1, "id": str(uuid.uuid4()), "type": "testapp.Ping", "body": {"x": 1}, "stamps": []},
        ),
        "oversized": dramatiq_body(
            own_queue,
            PING,
            {
                "v": 1,
                "id": str(uuid.uuid4()),
                "type": "testapp.Ping",
                "body": {"text": "x" * 1_100_000},
                "stamps": [],
            },
        ),
        "unknown actor": dramatiq_body(
            own_queue,
            "os.system",
            {"v": 1, "id": str(uuid.uuid4()), "type": "testapp.Ping", "body": {}, "stamps": []},
        ),
        "malformed JSON": b'{"queue_name": "not json',
    }
    # Given each kind of bad message published straight to the queue
    for body in poison.values():
        publish_raw(own_queue, body)

    # When a good message is sent after them
    good = send_good_message(own_queue, PING, Ping(text="after the poison"))

    # Then the good one is handled, and every bad one sits in the dead letters
    wait_for(lambda: Effect.objects.filter(message_id=good.message_id).exists(), what="the good message")
    wait_for(lambda: queue_depth(f"{own_queue}.XQ") == len(poison), what="every poison message dead-lettered")
    # ... with its error: in the failure store (or, for bytes that are not even JSON, the worker's log)
    stored = wait_for(lambda: FailedMessage.objects.count() == 4 and list(FailedMessage.objects.all()))
    assert all(failed.tries == 1 for failed in stored)
    errors = sorted(failed.error for failed in stored)
    assert sum("Unknown message type 'os.system'" in error for error in errors) == 1
    assert sum("no field(s) ['x']" in error for error in errors) == 1
    assert sum("MAX_MESSAGE_SIZE" in error for error in errors) == 1
    assert sum("ActorNotFound" in error for error in errors) == 1
    # ... and the bytes that are not even JSON are in the dead letters as they were sent
    assert poison["malformed JSON"] in queue_bodies(f"{own_queue}.XQ")


def messenger_failed(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return manage(env, "messenger_failed", *args)


def test_messenger_failed_end_to_end(own_queue, own_worker):
    _, env = own_worker
    # Given a message whose handler fails on every try
    broker = confirming_broker(own_queue)
    try:
        envelope, message = envelope_message(own_queue, FLAKY, Flaky(text="e2e"))
        broker.enqueue(message)
        doomed, message = envelope_message(own_queue, FLAKY, Flaky(text="doomed"))
        broker.enqueue(message)
    finally:
        broker.close()
    wait_for(lambda: FailedMessage.objects.count() == 2, what="both failures to be stored")
    message_id = str(envelope.message_id)

    # list
    listing = messenger_failed(env, "list")
    assert listing.returncode == 0, listing.stderr
    assert message_id in listing.stdout and FLAKY in listing.stdout and "NotFixedYet" in listing.stdout

    # show
    shown = messenger_failed(env, "show", message_id)
    assert shown.returncode == 0, shown.stderr
    assert "Traceback (most recent call last)" in shown.stdout and '"text": "e2e"' in shown.stdout

    # retry, once the cause is fixed: handled, and gone from the list
    Effect.objects.create(handler="fixed", message_id=uuid.uuid4(), payload={"text": "e2e"})
    retried = messenger_failed(env, "retry", message_id)
    assert retried.returncode == 0, retried.stderr
    wait_for(
        lambda: Effect.objects.filter(handler="flaky", message_id=envelope.message_id).exists(), what="retry"
    )
    assert message_id not in messenger_failed(env, "list").stdout

    # remove
    removed = messenger_failed(env, "remove", str(doomed.message_id))
    assert removed.returncode == 0, removed.stderr
    assert not FailedMessage.objects.exists()

    # an unknown id is an error
    unknown = messenger_failed(env, "retry", str(uuid.uuid4()))
    assert unknown.returncode != 0
    assert "No failed message" in unknown.stderr


def test_a_failure_record_from_a_real_worker(own_queue, own_worker):
    # Given a message whose handler (max_retries=1) fails on every try, under rundramatiq on RabbitMQ
    broker = confirming_broker(own_queue)
    try:
        envelope, message = envelope_message(own_queue, FLAKY, Flaky(text="record"))
        broker.enqueue(message)
    finally:
        broker.close()

    # When its retries are exhausted
    wait_for(
        lambda: FailedMessage.objects.filter(message_id=envelope.message_id).exists(),
        what="the failure to be stored",
    )

    # Then each try saw its ReceivedStamp (through Dramatiq's CurrentMessage) with Dramatiq's retries
    tries = Effect.objects.filter(handler="flaky-try", message_id=envelope.message_id).order_by("id")
    assert [effect.payload["retries"] for effect in tries] == [0, 1]

    # And the record has what docs/reliability.md lists: tries (Dramatiq's retries + 1), the error,
    # its traceback, and when the message first and last failed
    failed = FailedMessage.objects.get(message_id=envelope.message_id)
    assert failed.handler == FLAKY and failed.queue_name == own_queue
    assert failed.tries == 2
    assert failed.error == "tests.testapp.handlers.NotFixedYet: record is not fixed yet"
    assert failed.traceback.startswith("Traceback (most recent call last)")
    assert "raise NotFixedYet" in failed.traceback
    assert failed.first_failed_at < failed.last_failed_at
