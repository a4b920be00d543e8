"""RetryGuard: a message whose retry could not be enqueued is dead-lettered and stored, not acked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq.middleware import Middleware, MiddlewareError, Retries

from django_messenger import bus
from django_messenger.models import FailedMessage
from django_messenger.retries import RETRY_NOT_ENQUEUED, RetryGuard
from django_messenger.testing import drain
from tests.testapp.messages import Flaky

pytestmark = pytest.mark.django_db(transaction=True)

FLAKY = "tests.testapp.handlers.flaky"


class Refused(MiddlewareError):
    """What the broker's enqueue raises in these tests (Dramatiq re-raises MiddlewareErrors)."""


class RefuseDelayedEnqueues(Middleware):
    """Fault injection: the broker refuses every delayed enqueue, i.e. every retry."""

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if delay:
            raise Refused("the broker is blocked")


@pytest.fixture
def retries_refused(broker: Any) -> Iterator[None]:
    fault = RefuseDelayedEnqueues()
    broker.middleware.insert(0, fault)
    yield
    broker.middleware.remove(fault)


def test_the_guard_sits_before_retries_so_its_after_hooks_run_after_theirs(broker):
    kinds = [type(middleware) for middleware in broker.middleware]
    assert kinds.index(RetryGuard) < kinds.index(Retries)


def test_a_message_whose_retry_cannot_be_enqueued_is_dead_lettered_and_stored(broker, retries_refused):
    # Given a handler that fails, and a broker that refuses its retry
    envelope = bus.dispatch(Flaky(text="no retry possible"))

    # When a worker processes it
    drain(fail_fast=False)

    # Then it is not acked and forgotten: it is dead-lettered, and in the failure store, saying why
    assert [message.message_id for message in broker.dead_letters] != []
    failed = FailedMessage.objects.get(message_id=envelope.message_id)
    assert failed.handler == FLAKY
    assert failed.error.startswith(RETRY_NOT_ENQUEUED)
    assert "NotFixedYet: no retry possible is not fixed yet" in failed.error
    assert failed.tries == 1


def test_a_retry_that_was_enqueued_is_not_touched(broker):
    # Given a handler that fails on every try, on a broker that accepts retries
    envelope = bus.dispatch(Flaky(text="retried"))

    drain(fail_fast=False)

    # Then Retries did its work (one retry), and only the last failure was stored
    failed = FailedMessage.objects.get(message_id=envelope.message_id)
    assert failed.tries == 2
    assert not failed.error.startswith(RETRY_NOT_ENQUEUED)
