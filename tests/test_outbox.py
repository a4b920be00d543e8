"""The transactional outbox on the StubBroker: a dispatch is a row of the caller's transaction; the
relay publishes the rows in order, marks them sent, and keeps them while the broker refuses."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, transaction
from django.urls import reverse
from django.utils import timezone

from django_messenger import bus
from django_messenger.checks import check_outbox, check_unknown_settings
from django_messenger.encoding import decode_envelope
from django_messenger.exceptions import BrokerUnavailable, MessageTooLarge
from django_messenger.models import OutboxMessage
from django_messenger.outbox import OutboxTransport, Relay, RelayMiddleware, row_backoff
from django_messenger.stamps import OutboxStamp, SentStamp
from django_messenger.transports import router
from tests.conftest import queued
from tests.testapp.messages import Ping

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def outbox(settings: Any, broker: Any) -> Iterator[Any]:
    """The async transport with an outbox; yields the StubBroker."""
    settings.MESSENGER = {
        **settings.MESSENGER,
        "TRANSPORTS": {"async": {"queue_name": "default", "outbox": True}},
    }
    yield broker


class Refusing:
    """A broker whose enqueue fails with ``error`` for the messages ``refuse`` picks, else the stub's."""

    def __init__(self, stub: Any, error: Exception, refuse: Any = lambda message: True) -> None:
        self.stub = stub
        self.error = error
        self.refuse = refuse

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        if self.refuse(message):
            raise self.error
        return self.stub.enqueue(message, delay=delay)


def texts(messages: list[Any]) -> list[str]:
    return [decode_envelope(message.args[0]).message.text for message in messages]


def test_a_dispatch_writes_a_row_and_publishes_nothing(outbox):
    # When a message is dispatched outside any transaction
    envelope = bus.dispatch(Ping("hello"))

    # Then it is a committed row of the outbox, nothing is on the broker yet
    [row] = OutboxMessage.objects.all()
    assert row.message_id == envelope.message_id and row.sent_at is None
    assert queued(outbox) == []
    stamp = envelope.last(OutboxStamp)
    assert stamp is not None and stamp.outbox_id == row.pk and stamp.queue_name == "default"
    assert envelope.last(SentStamp) is None
    assert isinstance(router.transport_named("async"), OutboxTransport)

    # When the relay runs, the message is published once, with the id the stamp announced, and marked sent
    assert Relay(outbox).drain().sent == 1
    [message] = queued(outbox)
    assert message.message_id == stamp.broker_message_id
    assert decode_envelope(message.args[0]).message_id == envelope.message_id
    row.refresh_from_db()
    assert row.sent_at is not None
    assert Relay(outbox).drain().sent == 0
    assert len(queued(outbox)) == 1


def test_a_rolled_back_dispatch_is_never_published(outbox):
    with pytest.raises(RuntimeError), transaction.atomic():
        bus.dispatch(Ping("rolled back"))
        assert OutboxMessage.objects.count() == 1  # written in the transaction
        raise RuntimeError("roll back")

    assert OutboxMessage.objects.count() == 0
    assert Relay(outbox).drain().sent == 0
    assert queued(outbox) == []


def test_a_committed_dispatch_is_published_with_the_rest_of_its_transaction(outbox):
    with transaction.atomic():
        bus.dispatch(Ping("one"))
        bus.dispatch(Ping("two"))
    Relay(outbox).drain()
    assert texts(queued(outbox)) == ["one", "two"]


def test_rows_are_published_in_id_order_across_batches(outbox, settings):
    settings.MESSENGER = {**settings.MESSENGER, "OUTBOX_BATCH_SIZE": 2}
    for number in range(5):
        bus.dispatch(Ping(str(number)))
    result = Relay(outbox).drain()
    assert (result.sent, result.refused) == (5, False)
    assert texts(queued(outbox)) == ["0", "1", "2", "3", "4"]


def test_a_message_no_worker_accepts_fails_at_the_dispatch_and_writes_nothing(outbox, settings):
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 200}
    with pytest.raises(MessageTooLarge):
        bus.dispatch(Ping("x" * 500))
    assert OutboxMessage.objects.count() == 0


def test_a_view_answers_202_once_the_row_is_committed(outbox, api_client):
    response = api_client.post("/pings/", {"text": "from a view"}, format="json")

    assert response.status_code == 202, response.content
    [row] = OutboxMessage.objects.all()
    assert str(row.message_id) == response["Messenger-Message-Id"]
    assert queued(outbox) == []
    Relay(outbox).drain()
    assert texts(queued(outbox)) == ["from a view"]


def test_a_view_whose_outbox_write_fails_answers_503(outbox, api_client, monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly (db.internal:5432)")

    monkeypatch.setattr(OutboxMessage, "save", broken)
    response = api_client.post("/pings/", {"text": "lost"}, format="json")

    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    uuid.UUID(response["Messenger-Message-Id"])
    assert "db.internal" not in response.content.decode() and "5432" not in response.content.decode()


def test_a_refusing_broker_keeps_every_row_and_their_order(outbox):
    for number in range(3):
        bus.dispatch(Ping(str(number)))

    # When the broker refuses the first publish
    result = Relay(Refusing(outbox, BrokerUnavailable("no confirm"))).drain()

    # Then the pass stops there: nothing published, the row counts the attempt, none waits on its own
    assert (result.sent, result.refused) == (0, True)
    rows = list(OutboxMessage.objects.all())
    assert [row.attempts for row in rows] == [1, 0, 0]
    assert rows[0].last_error == "no confirm" and rows[0].available_at is None

    # When the broker is back, every row goes, in order
    assert Relay(outbox).drain().sent == 3
    assert texts(queued(outbox)) == ["0", "1", "2"]


def test_a_row_the_broker_never_takes_waits_and_the_others_go_on(outbox):
    bus.dispatch(Ping("too big for this broker"))
    bus.dispatch(Ping("fine"))

    def first(message: Any) -> bool:
        return "too big" in str(message.args[0])

    result = Relay(Refusing(outbox, MessageTooLarge(limit=10, size=20), refuse=first)).drain()

    assert (result.sent, result.refused) == (1, False)
    assert texts(queued(outbox)) == ["fine"]
    stuck = OutboxMessage.objects.get(sent_at__isnull=True)
    assert stuck.attempts == 1 and "MessageTooLarge" in stuck.last_error
    assert stuck.available_at is not None and stuck.available_at > timezone.now()
    assert row_backoff(1) == 1 and row_backoff(2) == 2 and row_backoff(30) == 300


def test_a_delay_counts_from_the_dispatch(outbox):
    bus.dispatch(Ping("later"), delay=timedelta(seconds=60))
    row = OutboxMessage.objects.get()
    assert row.delay == 60_000

    Relay(outbox).drain()

    [message] = queued(outbox)
    assert message.queue_name == "default.DQ"
    # Dramatiq sets the eta from its own clock a moment after the relay computed what is left of
    # the delay: allow that moment (not the time the row waited in the outbox)
    assert 0 < message.options["eta"] - message.message_timestamp <= 60_000 + 500


def test_sent_rows_are_pruned_after_outbox_keep_sent(outbox, settings):
    bus.dispatch(Ping("old"))
    bus.dispatch(Ping("new"))
    Relay(outbox).drain()
    OutboxMessage.objects.filter(pk=OutboxMessage.objects.first().pk).update(
        sent_at=timezone.now() - timedelta(hours=2)
    )
    assert Relay(outbox).prune() == 1
    assert [row.sent_at is not None for row in OutboxMessage.objects.all()] == [True]

    settings.MESSENGER = {**settings.MESSENGER, "OUTBOX_KEEP_SENT": 0}
    bus.dispatch(Ping("gone at once"))
    Relay(outbox).drain()
    assert OutboxMessage.objects.count() == 1


def test_two_relays_at_once_publish_each_row_once(outbox):
    """PostgreSQL's SKIP LOCKED: the second relay skips the rows the first one holds."""
    for number in range(4):
        bus.dispatch(Ping(str(number)))
    holding = threading.Event()
    release = threading.Event()

    class Slow:
        def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
            holding.set()
            assert release.wait(30)
            return outbox.enqueue(message, delay=delay)

    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.setdefault("pass", Relay(Slow()).publish_due()))
    thread.start()
    try:
        assert holding.wait(30)
        # While the first relay holds its rows, a second one finds none to publish
        assert Relay(outbox).publish_due().sent == 0
    finally:
        release.set()
        thread.join(30)
    assert first["pass"].sent == 4
    assert texts(queued(outbox)) == ["0", "1", "2", "3"]
    assert Relay(outbox).drain().sent == 0


def test_the_worker_middleware_runs_one_relay_while_a_transport_has_an_outbox(outbox, settings):
    settings.MESSENGER = {**settings.MESSENGER, "OUTBOX_POLL_INTERVAL": 0.05}
    middleware = RelayMiddleware()
    middleware.after_worker_boot(outbox, None)
    relay = middleware.relay
    try:
        middleware.after_worker_boot(outbox, None)
        assert middleware.relay is relay  # at most one a process
        bus.dispatch(Ping("relayed by the worker"))
        deadline = timezone.now() + timedelta(seconds=30)
        while not queued(outbox) and timezone.now() < deadline:
            threading.Event().wait(0.05)
        assert texts(queued(outbox)) == ["relayed by the worker"]
    finally:
        middleware.before_worker_shutdown(outbox, None)
    assert middleware.relay is None


def test_the_worker_middleware_runs_no_relay_without_an_outbox(broker, settings):
    middleware = RelayMiddleware()
    middleware.after_worker_boot(broker, None)
    assert middleware.relay is None
    settings.MESSENGER = {
        "TRANSPORTS": {"async": {"outbox": True}},
        "OUTBOX_RELAY_IN_WORKERS": False,
    }
    middleware.after_worker_boot(broker, None)
    assert middleware.relay is None


def test_messenger_relay_once_publishes_and_prunes(outbox):
    bus.dispatch(Ping("cron"))
    out = StringIO()
    call_command("messenger_relay", "--once", "--prune", stdout=out)
    assert "Published 1 messages; 0 left unsent." in out.getvalue()
    assert texts(queued(outbox)) == ["cron"]


def test_messenger_relay_once_fails_when_the_broker_refuses(outbox, monkeypatch):
    bus.dispatch(Ping("refused"))
    monkeypatch.setattr(Relay, "publish_row", lambda self, row: (_ for _ in ()).throw(BrokerUnavailable("x")))
    out = StringIO()
    with pytest.raises(CommandError, match="refused"):
        call_command("messenger_relay", "--once", stdout=out)
    assert "0 messages; 1 left unsent" in out.getvalue()


def test_e017_an_outbox_that_is_not_a_bool(settings):
    settings.MESSENGER = {"TRANSPORTS": {"async": {"outbox": "yes"}}}
    [error] = check_outbox()
    assert error.id == "django_messenger.E017" and "'yes'" in error.msg
    assert not isinstance(router.transport_named("async"), OutboxTransport)


def test_w017_an_outbox_in_front_of_a_broker_that_is_the_database(outbox, monkeypatch):
    assert check_outbox() == []  # PostgreSQL locks rows; the StubBroker is no database
    monkeypatch.setattr(type(outbox), "transactional", True, raising=False)
    [warning] = check_outbox()
    assert warning.id == "django_messenger.W017" and "adds a copy" in warning.msg


def test_w017_relays_in_workers_on_a_database_without_row_locks(outbox, monkeypatch):
    from django.db import connection

    monkeypatch.setattr(connection.features, "has_select_for_update_skip_locked", False)
    [warning] = check_outbox()
    assert warning.id == "django_messenger.W017" and "twice" in warning.msg


def test_outbox_is_a_known_transport_option(outbox):
    assert check_unknown_settings() == []


def test_the_admin_lists_the_rows_waiting_for_the_relay(outbox, admin_client):
    envelope = bus.dispatch(Ping("waiting"))
    Relay(Refusing(outbox, BrokerUnavailable("RabbitMQ is away"))).drain()

    changelist = reverse("admin:django_messenger_outboxmessage_changelist")
    response = admin_client.get(f"{changelist}?sent_at__isempty=1")

    assert response.status_code == 200
    assert str(envelope.message_id) in response.content.decode()
    assert "RabbitMQ is away" in response.content.decode()
    row = OutboxMessage.objects.get()
    change = reverse("admin:django_messenger_outboxmessage_change", args=[row.pk])
    assert admin_client.get(change).status_code == 200


def test_the_app_puts_the_relay_middleware_on_a_broker_only_with_an_outbox(settings):
    # Given two fresh brokers with Dramatiq's default middleware
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.middleware import Retries

    from django_messenger.apps import add_middleware
    from django_messenger.delays import DelayHopMiddleware
    from django_messenger.retries import RetryGuard

    without, with_outbox = StubBroker(), StubBroker()

    # When the app adds its middleware to one with no outbox, then to one with an outbox
    add_middleware(without)
    settings.MESSENGER = {**settings.MESSENGER, "TRANSPORTS": {"async": {"outbox": True}}}
    add_middleware(with_outbox)
    add_middleware(with_outbox)  # twice: nothing is added again

    # Then only the second has the relay's middleware (a no-op one costs every message a call
    # for each hook), once; both have the rest, RetryGuard before Retries, the delay hop last
    def kinds(broker):
        return [type(middleware) for middleware in broker.middleware]

    assert RelayMiddleware not in kinds(without)
    assert kinds(with_outbox).count(RelayMiddleware) == 1
    for broker in (without, with_outbox):
        assert kinds(broker).index(RetryGuard) < kinds(broker).index(Retries)
        assert kinds(broker)[-1] is DelayHopMiddleware
    assert [kind for kind in kinds(with_outbox) if kind is not RelayMiddleware] == kinds(without)
