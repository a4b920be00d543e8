"""bus.dispatch: envelopes, transports, delays, fan-out and transactions (StubBroker)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction

from django_messenger import Envelope, NoHandlerForMessage, bus
from django_messenger.encoding import decode_envelope
from django_messenger.exceptions import BrokerUnavailable
from django_messenger.stamps import DelayStamp, HandledStamp, SentStamp
from django_messenger.testing import drain
from django_messenger.transports.dramatiq.binding import FANOUT_PREFIX
from tests.conftest import queued
from tests.testapp.messages import Ping, Shout
from tests.testapp.models import Effect


class Unhandled:
    pass


def test_dispatch_returns_the_envelope_with_the_broker_message_id(broker):
    envelope = bus.dispatch(Ping(text="hi"))

    assert isinstance(envelope, Envelope)
    sent = envelope.last(SentStamp)
    [message] = queued(broker)
    assert sent.broker_message_id == message.message_id
    assert sent.transport == "async"
    assert decode_envelope(message.args[0]).message_id == envelope.message_id


def test_a_type_without_handler_cannot_be_dispatched(broker):
    with pytest.raises(NoHandlerForMessage, match="Unhandled"):
        bus.dispatch(Unhandled())
    assert queued(broker) == []


def test_delay_goes_to_the_delay_queue_with_an_eta(broker):
    envelope = bus.dispatch(Ping(text="later"), delay=timedelta(minutes=5))

    assert envelope.last(DelayStamp).milliseconds == 300_000
    [message] = queued(broker)
    assert message.queue_name.endswith(".DQ")
    assert message.options["eta"] > message.message_timestamp


def test_several_handlers_make_one_publish_to_the_fan_out(broker):
    bus.dispatch(Shout(text="all"))

    [message] = queued(broker)
    assert message.actor_name.startswith(FANOUT_PREFIX)


@pytest.mark.django_db(transaction=True)
def test_fan_out_runs_every_handler_in_the_worker(broker):
    envelope = bus.dispatch(Shout(text="all"))

    drain()

    handlers = set(Effect.objects.filter(message_id=envelope.message_id).values_list("handler", flat=True))
    assert handlers == {"shout_one", "shout_two"}


def test_a_refusing_broker_raises_broker_unavailable(broker, monkeypatch):
    def refuse(message: Any, *, delay: Any = None) -> Any:
        raise OSError("down")

    monkeypatch.setattr(broker, "enqueue", refuse)

    with pytest.raises(BrokerUnavailable) as raised:
        bus.dispatch(Ping(text="lost?"))

    # The caller learns which envelope may or may not have reached the broker, and why
    assert raised.value.envelope is not None
    assert raised.value.envelope.message == Ping(text="lost?")
    assert raised.value.message_id == raised.value.envelope.message_id
    assert "down" in str(raised.value)
    assert "down" not in str(raised.value.detail)


@pytest.mark.django_db
@pytest.mark.usefixtures("sync_transport")
class TestSync:
    def test_handlers_run_at_once_with_their_result_stamped(self, broker):
        envelope = bus.dispatch(Ping(text="now"))

        assert envelope.last(HandledStamp).result == "NOW"
        assert envelope.last(HandledStamp).handler_name == "tests.testapp.handlers.handle"
        assert queued(broker) == []

    def test_the_handler_writes_roll_back_with_the_caller(self):
        with pytest.raises(RuntimeError), transaction.atomic():
            bus.dispatch(Ping(text="undone"))
            assert Effect.objects.filter(payload__text="undone").exists()
            raise RuntimeError

        assert not Effect.objects.filter(payload__text="undone").exists()

    def test_the_same_message_id_reaches_the_handler(self, received):
        envelope = bus.dispatch(Ping(text="id"))

        assert received[-1].message_id == envelope.message_id


@pytest.mark.django_db(transaction=True)
class TestTransactions:
    def test_an_async_send_waits_for_the_commit(self, broker):
        with transaction.atomic():
            envelope = bus.dispatch(Ping(text="on commit"))
            assert queued(broker) == []
            assert envelope.last(SentStamp) is None

        assert len(queued(broker)) == 1

    def test_a_rollback_sends_nothing(self, broker):
        with pytest.raises(RuntimeError), transaction.atomic():
            bus.dispatch(Ping(text="never"))
            raise RuntimeError

        assert queued(broker) == []

    def test_a_send_that_fails_at_commit_raises_there(self, broker, monkeypatch):
        def refuse(message: Any, *, delay: Any = None) -> Any:
            raise OSError("down")

        monkeypatch.setattr(broker, "enqueue", refuse)

        with pytest.raises(BrokerUnavailable), transaction.atomic():
            bus.dispatch(Ping(text="fails late"))

    def test_on_commit_false_sends_at_once(self, broker):
        with transaction.atomic():
            bus.dispatch(Ping(text="now"), on_commit=False)
            assert len(queued(broker)) == 1
