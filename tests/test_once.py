"""Exactly-once effects: ``@handler(idempotent=True)`` (django_messenger.once)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from django_messenger import Envelope, bus, failures, handler, once
from django_messenger.models import FailedMessage, HandledMessage
from django_messenger.stamps import HandledStamp, OperationStamp
from django_messenger.testing import capture_messages, drain
from testproject.library.models import Book
from tests.conftest import queued
from tests.testapp.messages import IdempotentWork
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

WORK_ONCE = "tests.testapp.handlers.work_once"


@dataclasses.dataclass
class Order:
    number: int


def effects(name: str, message_id: uuid.UUID) -> int:
    return Effect.objects.filter(handler=name, message_id=message_id).count()


def records(message_id: uuid.UUID) -> set[str]:
    return set(HandledMessage.objects.filter(message_id=message_id).values_list("handler", flat=True))


def redeliver(broker: Any, messages: list[Any]) -> None:
    """Put ``messages`` on the queue again, as a broker redelivers what a dead worker held."""
    for message in messages:
        broker.enqueue(message)


# -- a redelivery ------------------------------------------------------------------------------


def test_a_redelivered_message_is_acknowledged_without_running_the_handler_again(broker, caplog):
    # Given an idempotent handler's message, handled once by a worker
    envelope = bus.dispatch(IdempotentWork(n=1))
    sent = queued(broker)
    drain()
    assert effects("work_once", envelope.message_id) == 1
    assert records(envelope.message_id) == {WORK_ONCE}

    # When the broker delivers it again (its worker died after the commit, before the ack)
    with caplog.at_level(logging.INFO, logger="django_messenger"):
        redeliver(broker, sent)
        drain()

    # Then the handler did not run again, the message was acknowledged, and the skip was logged
    assert effects("work_once", envelope.message_id) == 1
    assert HandledMessage.objects.filter(message_id=envelope.message_id).count() == 1
    assert broker.dead_letters == []
    assert queued(broker) == []
    assert f"Message {envelope.message_id} was already handled by {WORK_ONCE}" in caplog.text


def test_the_demo_s_redelivered_create_inserts_one_book(broker):
    # Given a POST's message for the demo's idempotent library handler, handled once
    bus.dispatch(Book(title="Dune", author="Frank Herbert"), stamps=[OperationStamp("create")])
    sent = queued(broker)
    drain()

    # When it is delivered again
    redeliver(broker, sent)
    drain()

    # Then there is one book, not two
    assert Book.objects.filter(title="Dune").count() == 1


def test_a_handler_that_is_not_idempotent_runs_again_and_costs_no_query(scratch, django_assert_num_queries):
    calls: list[Envelope] = []

    @handler
    def count(message: Order, envelope: Envelope) -> int:
        calls.append(envelope)
        return len(calls)

    envelope = Envelope(Order(number=1))
    with django_assert_num_queries(0):
        assert once.call(scratch(count), envelope) == once.Outcome(ran=True, result=1)
        assert once.call(scratch(count), envelope) == once.Outcome(ran=True, result=2)


# -- a handler that raises ---------------------------------------------------------------------


def test_a_handler_that_raises_rolls_back_its_writes_and_the_record_and_is_retried(broker, scratch):
    tries: list[int] = []

    @handler(idempotent=True, max_retries=2, min_backoff=1, max_backoff=5)
    def fail_once(message: Order, envelope: Envelope) -> None:
        Effect.objects.create(
            handler="fail_once", message_id=envelope.message_id, payload={"try": len(tries)}
        )
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("not this time")

    # Given a message whose idempotent handler writes, then raises on its first try
    envelope = bus.dispatch(Order(number=7))

    # When a worker handles it (Dramatiq retries it)
    drain(fail_fast=False)

    # Then the failed try's write was rolled back with its record; the retry's write and record stayed
    assert len(tries) == 2
    assert list(Effect.objects.filter(message_id=envelope.message_id).values_list("payload", flat=True)) == [
        {"try": 1}
    ]
    assert records(envelope.message_id) == {scratch(fail_once).actor_name}
    assert broker.dead_letters == []


def test_a_failure_retried_with_messenger_failed_runs_the_handler_once(broker, scratch):
    fixed = threading.Event()

    @handler(idempotent=True, max_retries=0)
    def until_fixed(message: Order, envelope: Envelope) -> None:
        Effect.objects.create(handler="until_fixed", message_id=envelope.message_id)
        if not fixed.is_set():
            raise RuntimeError("broken")

    # Given an idempotent handler's failure, stored for good: nothing of it was recorded
    envelope = bus.dispatch(Order(number=8))
    drain(fail_fast=False)
    failed = FailedMessage.objects.get(message_id=envelope.message_id)
    assert records(envelope.message_id) == set()
    assert effects("until_fixed", envelope.message_id) == 0

    # When the cause is fixed and the failure retried (the same envelope: the same message id)
    fixed.set()
    sent = failures.retry(failed)
    drain()

    # Then the handler ran once and recorded it; a redelivery of the retry runs nothing more
    assert effects("until_fixed", envelope.message_id) == 1
    assert records(envelope.message_id) == {scratch(until_fixed).actor_name}
    redeliver(broker, [sent])
    drain()
    assert effects("until_fixed", envelope.message_id) == 1


def test_an_integrity_error_of_the_handlers_own_is_raised_not_taken_for_a_redelivery(scratch):
    @handler(idempotent=True)
    def clash(message: Order, envelope: Envelope) -> None:
        raise IntegrityError("duplicate key value violates a constraint of the handler's own")

    envelope = Envelope(Order(number=9))
    with pytest.raises(IntegrityError):
        once.call(scratch(clash), envelope)
    assert records(envelope.message_id) == set()


# -- fan-out -----------------------------------------------------------------------------------


def test_fan_out_keeps_one_record_per_handler_and_skips_each_on_redelivery(broker, scratch):
    @handler(idempotent=True)
    def bill(message: Order, envelope: Envelope) -> None:
        Effect.objects.create(handler="bill", message_id=envelope.message_id)

    @handler(idempotent=True)
    def ship(message: Order, envelope: Envelope) -> None:
        Effect.objects.create(handler="ship", message_id=envelope.message_id)

    # Given one dispatch of a type with two idempotent handlers, handled through the fan-out actor
    envelope = bus.dispatch(Order(number=10))
    fanned = queued(broker)
    drain()
    assert records(envelope.message_id) == {scratch(bill).actor_name, scratch(ship).actor_name}

    # When the fan-out message and each handler's message are delivered again
    redeliver(broker, fanned)
    drain()

    # Then each handler applied it once
    assert effects("bill", envelope.message_id) == 1
    assert effects("ship", envelope.message_id) == 1
    assert HandledMessage.objects.filter(message_id=envelope.message_id).count() == 2


def test_a_fan_out_retried_for_the_failed_handler_runs_only_that_one(broker, scratch):
    fixed = threading.Event()

    @handler(idempotent=True)
    def reserve(message: Order, envelope: Envelope) -> None:
        Effect.objects.create(handler="reserve", message_id=envelope.message_id)

    @handler(idempotent=True, max_retries=0)
    def charge(message: Order, envelope: Envelope) -> None:
        if not fixed.is_set():
            raise RuntimeError("card declined")
        Effect.objects.create(handler="charge", message_id=envelope.message_id)

    envelope = bus.dispatch(Order(number=11))
    drain(fail_fast=False)
    assert records(envelope.message_id) == {scratch(reserve).actor_name}

    fixed.set()
    failures.retry(FailedMessage.objects.get(message_id=envelope.message_id))
    drain()

    assert effects("reserve", envelope.message_id) == 1
    assert effects("charge", envelope.message_id) == 1
    assert records(envelope.message_id) == {scratch(reserve).actor_name, scratch(charge).actor_name}


# -- deliveries at once ------------------------------------------------------------------------


def deliver_at_once(target: Callable[[], Any], count: int = 2) -> list[Any]:
    """Run ``target`` in ``count`` threads started together; their results or exceptions."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = target()
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_deliveries_at_once_run_the_handler_once(scratch):
    @handler(idempotent=True)
    def slow(message: Order, envelope: Envelope) -> None:
        time.sleep(0.5)  # the other delivery's insert waits on this uncommitted record meanwhile
        Effect.objects.create(handler="slow", message_id=envelope.message_id)

    envelope = Envelope(Order(number=12))
    outcomes = deliver_at_once(lambda: once.call(scratch(slow), envelope))

    assert sorted(outcome.ran for outcome in outcomes) == [False, True]
    assert effects("slow", envelope.message_id) == 1


def test_a_delivery_waiting_on_one_that_rolls_back_runs_the_handler(scratch):
    runs: list[int] = []

    @handler(idempotent=True)
    def first_fails(message: Order, envelope: Envelope) -> None:
        runs.append(1)
        if len(runs) == 1:
            time.sleep(0.5)
            raise RuntimeError("the first delivery fails")
        Effect.objects.create(handler="first_fails", message_id=envelope.message_id)

    envelope = Envelope(Order(number=13))
    outcomes = deliver_at_once(lambda: once.call(scratch(first_fails), envelope))

    assert sum(isinstance(outcome, RuntimeError) for outcome in outcomes) == 1
    assert [outcome.ran for outcome in outcomes if isinstance(outcome, once.Outcome)] == [True]
    assert effects("first_fails", envelope.message_id) == 1


# -- the sync transport and the messenger fixture ----------------------------------------------


def test_on_the_sync_transport_an_envelope_dispatched_again_is_not_handled_again(sync_transport):
    # Given an idempotent handler's message handled synchronously
    first = bus.dispatch(IdempotentWork(n=2))
    assert first.last(HandledStamp) is not None

    # When the same envelope is dispatched again
    again = bus.dispatch(first)

    # Then the handler did not run again, and the envelope got no second HandledStamp
    assert again.message_id == first.message_id
    assert effects("work_once", first.message_id) == 1
    assert len(again.all(HandledStamp)) == 1


def test_on_the_sync_transport_the_record_rolls_back_with_the_callers_transaction(sync_transport):
    with pytest.raises(RuntimeError), transaction.atomic():
        envelope = bus.dispatch(IdempotentWork(n=3))
        assert records(envelope.message_id) == {WORK_ONCE}
        raise RuntimeError("the caller changes its mind")

    assert records(envelope.message_id) == set()
    assert effects("work_once", envelope.message_id) == 0


def test_handle_all_records_an_idempotent_handlers_messages():
    with capture_messages() as messenger:
        envelope = bus.dispatch(IdempotentWork(n=4))
        messenger.handle_all()

    assert effects("work_once", envelope.message_id) == 1
    assert records(envelope.message_id) == {WORK_ONCE}


# -- pruning -----------------------------------------------------------------------------------


def aged(days: float) -> uuid.UUID:
    message_id = uuid.uuid4()
    HandledMessage.objects.create(
        message_id=message_id, handler=WORK_ONCE, handled_at=timezone.now() - timedelta(days=days)
    )
    return message_id


def test_prune_deletes_the_records_older_than_handled_ttl(settings):
    settings.MESSENGER = {**settings.MESSENGER, "HANDLED_TTL": 2 * 24 * 3600}
    old, recent = aged(3), aged(1)

    out = StringIO()
    call_command("messenger_handled", "prune", stdout=out)

    assert set(HandledMessage.objects.values_list("message_id", flat=True)) == {recent}
    assert "Deleted 1 record(s)" in out.getvalue()
    assert old not in set(HandledMessage.objects.values_list("message_id", flat=True))


def test_prune_older_than_overrides_the_setting_and_a_bad_value_is_an_error():
    aged(3)
    kept = aged(0.5)

    call_command("messenger_handled", "prune", "--older-than", str(24 * 3600), stdout=StringIO())
    assert list(HandledMessage.objects.values_list("message_id", flat=True)) == [kept]

    for bad in ("-1", "nan", "1e30"):
        with pytest.raises(CommandError, match="--older-than"):
            call_command("messenger_handled", "prune", "--older-than", bad, stdout=StringIO())
    with pytest.raises(CommandError, match="No database 'nowhere'"):
        call_command("messenger_handled", "prune", "--database", "nowhere", stdout=StringIO())
