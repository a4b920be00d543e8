"""The pytest plugin's ``messenger`` fixture and its unittest twin, MessengerTestMixin."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.test import TestCase

from django_messenger import bus, handler
from django_messenger.exceptions import MessageTooLarge
from django_messenger.stamps import HandledStamp, SentStamp
from django_messenger.testing import Messenger, MessengerTestMixin, capture_messages
from testproject.accounts.messages import ResetPasswordRequest
from tests.conftest import queued
from tests.testapp.messages import Ping, PlainGreeting, Shout
from tests.testapp.models import Effect

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Relay:
    text: str


class Boom(Exception):
    pass


@dataclasses.dataclass
class Explode:
    reason: str


# -- capture -----------------------------------------------------------------------------


def test_dispatched_messages_are_kept_and_nothing_reaches_the_broker(
    broker: Any, messenger: Messenger
) -> None:
    # When two messages are dispatched while the fixture is active
    first = bus.dispatch(Ping("one"))
    second = bus.dispatch(PlainGreeting("Ada"))

    # Then both are captured, in order, with the ids the bus returned
    assert [envelope.message_id for envelope in messenger.dispatched] == [first.message_id, second.message_id]
    # and nothing was sent: the StubBroker's queues are empty, no SentStamp
    assert queued(broker) == []
    assert first.last(SentStamp) is None


def test_messages_of_a_type_in_order(broker: Any, messenger: Messenger) -> None:
    bus.dispatch(Ping("one"))
    bus.dispatch(PlainGreeting("Ada"))
    bus.dispatch(Ping("two"))

    assert messenger.messages(Ping) == [Ping("one"), Ping("two")]
    assert messenger.messages(PlainGreeting) == [PlainGreeting("Ada")]
    assert messenger.messages(Shout) == []


def test_clear_forgets_what_was_dispatched(broker: Any, messenger: Messenger, db: None) -> None:
    bus.dispatch(Ping("forgotten"))

    messenger.clear()
    messenger.handle_all()

    assert messenger.dispatched == []
    assert not Effect.objects.exists()
    bus.dispatch(Ping("kept"))
    assert messenger.messages(Ping) == [Ping("kept")]


def test_what_no_worker_accepts_is_refused_at_dispatch(
    broker: Any, messenger: Messenger, settings: Any
) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 1024}

    with pytest.raises(MessageTooLarge):
        bus.dispatch(Ping("x" * 2000))

    assert messenger.messages(Ping) == [Ping("x" * 2000)]  # dispatched, as capture_dispatched records it
    assert messenger.pending == []  # but not kept for handling


@pytest.mark.django_db
def test_a_view_answers_202_and_its_message_is_kept(
    broker: Any, messenger: Messenger, api_client: Any
) -> None:
    response = api_client.post("/demo/reset-password-requests/", {"username": "ada"}, format="json")

    assert response.status_code == 202
    [envelope] = messenger.dispatched
    assert envelope.message == ResetPasswordRequest(username="ada")
    assert str(envelope.message_id) == response["Messenger-Message-Id"]
    assert queued(broker) == []


def test_nested_captures_keep_the_message_in_the_innermost(broker: Any, messenger: Messenger) -> None:
    with capture_messages() as inner:
        bus.dispatch(Ping("inner"))

    assert [envelope.message for envelope in inner.pending] == [Ping("inner")]
    assert messenger.pending == []
    assert messenger.messages(Ping) == [Ping("inner")]
    assert queued(broker) == []


# -- transactions: kept at dispatch --------------------------------------------------------


@pytest.mark.django_db
def test_a_dispatch_inside_atomic_is_kept_at_once(broker: Any, messenger: Messenger) -> None:
    # Given a dispatch from code inside a transaction (that a db test never commits)
    with transaction.atomic():
        bus.dispatch(Ping("in a transaction"))

        # Then it is captured at dispatch, not at the commit
        assert messenger.messages(Ping) == [Ping("in a transaction")]


@pytest.mark.django_db
def test_a_dispatch_in_a_rolled_back_transaction_stays_captured(broker: Any, messenger: Messenger) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        bus.dispatch(Ping("rolled back"))
        raise RuntimeError

    # Documented: the fixture records dispatches, as mailoutbox records mails
    assert messenger.messages(Ping) == [Ping("rolled back")]
    assert queued(broker) == []


# -- handle_all ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_handle_all_runs_the_real_handlers_in_process(
    broker: Any, messenger: Messenger, received: list[Any]
) -> None:
    # Given a Ping (one handler) and a Shout (two handlers), captured
    ping = bus.dispatch(Ping("handled"))
    shout = bus.dispatch(Shout("all"))
    assert not Effect.objects.exists()

    # When their handlers are run
    messenger.handle_all()

    # Then every handler ran, with the dispatched ids, and its writes are visible to the test
    effects = Effect.objects.order_by("handler")
    assert [(effect.handler, effect.message_id) for effect in effects] == [
        ("ping", ping.message_id),
        ("shout_one", shout.message_id),
        ("shout_two", shout.message_id),
    ]
    assert [envelope.message_id for envelope in received] == [ping.message_id]
    assert messenger.pending == []
    assert queued(broker) == []


@pytest.mark.django_db
def test_handle_all_handles_what_the_handlers_dispatch(
    broker: Any, messenger: Messenger, scratch: Any
) -> None:
    # Given a handler that dispatches a Ping
    @handler
    def relay(message: Relay) -> None:
        bus.dispatch(Ping(message.text))

    bus.dispatch(Relay("passed on"))

    # When the captured messages are handled
    messenger.handle_all()

    # Then the Ping was captured and handled too
    assert messenger.messages(Ping) == [Ping("passed on")]
    assert Effect.objects.get().payload == {"text": "passed on"}
    assert queued(broker) == []


@pytest.mark.django_db
def test_handle_all_raises_the_handlers_exception(broker: Any, messenger: Messenger, scratch: Any) -> None:
    @handler(max_retries=0)
    def explode(message: Explode) -> None:
        raise Boom(message.reason)

    bus.dispatch(Explode("kaboom"))
    bus.dispatch(Ping("after"))

    with pytest.raises(Boom, match="kaboom"):
        messenger.handle_all()

    # the envelopes after the failing one are still pending
    assert messenger.pending[0].message == Ping("after")


# -- the sync transport still handles -------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("sync_transport")
def test_a_sync_message_is_still_handled_and_captured(broker: Any, messenger: Messenger) -> None:
    envelope = bus.dispatch(Ping("sync"))

    assert envelope.last(HandledStamp) is not None
    assert Effect.objects.get().payload == {"text": "sync"}
    assert messenger.messages(Ping) == [Ping("sync")]
    messenger.handle_all()
    assert Effect.objects.count() == 1  # not handled twice


def test_the_capture_ends_with_the_test(broker: Any) -> None:
    # Given no messenger fixture, a dispatch reaches the broker again
    bus.dispatch(Ping("sent"))

    assert len(queued(broker)) == 1


# -- unittest ---------------------------------------------------------------------------------


class MessengerTestMixinTests(MessengerTestMixin, TestCase):
    def test_self_messenger_captures_and_handles(self) -> None:
        envelope = bus.dispatch(Ping("unittest"))

        self.assertEqual(self.messenger.messages(Ping), [Ping("unittest")])
        self.messenger.handle_all()
        self.assertEqual(Effect.objects.get().message_id, envelope.message_id)


# -- the entry point ------------------------------------------------------------------------


def test_installing_the_app_registers_the_fixture(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a test file that only asks for the fixture: no conftest, no pytest_plugins
    pytester.makepyfile(
        """
        from django_messenger import bus
        from tests.testapp.messages import Ping

        def test_captured(messenger):
            bus.dispatch(Ping("from a user's test"))
            assert messenger.messages(Ping) == [Ping("from a user's test")]
        """
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    # When pytest runs it in a fresh process
    result = pytester.runpytest_subprocess("--ds=tests.settings", "-p", "no:cacheprovider")

    # Then the entry point provided the fixture
    result.assert_outcomes(passed=1)


def test_loading_the_plugin_needs_no_django_settings() -> None:
    # Given a fresh interpreter with no settings (pytest loads plugins before pytest-django sets Django up)
    script = (
        "import sys, django_messenger.pytest_plugin\n"
        "from django.conf import settings\n"
        "assert not settings.configured\n"
        "assert not {'django_messenger.models', 'django_messenger.testing'} & set(sys.modules)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}

    # When the plugin module is imported, it imports no model and touches no setting
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
