"""MessengerMiddleware and the Dramatiq parts the app puts on the broker.

Messenger uses Dramatiq's ``CurrentMessage`` (for the ``ReceivedStamp``) and
django-dramatiq's ``DbConnectionsMiddleware`` (fresh database connections) instead of its
own, and Dramatiq's ``retries`` and ``traceback`` options instead of copies of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from django_dramatiq.middleware import DbConnectionsMiddleware
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage

from django_messenger.failures import FIRST_FAILED_AT, RETRIES, tries
from django_messenger.middleware import MessengerMiddleware
from django_messenger.transports.dramatiq.binding import binding
from tests.integration.processes import ROOT


def message(**options: Any) -> MessageProxy:
    return MessageProxy(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options=options))


def kinds(middleware: list[Any]) -> list[str]:
    return [type(m).__name__ for m in middleware]


def test_the_app_puts_dramatiqs_current_message_and_db_connections_on_the_broker() -> None:
    # Given the test project's broker (its MIDDLEWARE lists DbConnectionsMiddleware, not CurrentMessage)
    middleware = binding.broker.middleware

    # Then each is on it once, with messenger's own after Retries
    assert sum(isinstance(m, CurrentMessage) for m in middleware) == 1
    assert sum(isinstance(m, DbConnectionsMiddleware) for m in middleware) == 1
    names = kinds(middleware)
    assert names.index("Retries") < names.index("MessengerMiddleware")
    assert names.index("RetryGuard") < names.index("Retries")


def test_the_current_message_is_known_while_it_is_processed() -> None:
    # The app adds Dramatiq's CurrentMessage to the broker: the ReceivedStamp reads it
    [middleware] = [m for m in binding.broker.middleware if isinstance(m, CurrentMessage)]
    current = message()

    def process() -> tuple[Any, Any]:
        middleware.before_process_message(None, current)
        during = CurrentMessage.get_current_message()
        middleware.after_process_message(None, current)
        return during, CurrentMessage.get_current_message()

    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(process()))
    thread.start()
    thread.join(10)
    assert result == [(current, None)]


def test_a_broker_without_them_gets_them_when_the_app_is_ready() -> None:
    # Given a project whose DRAMATIQ_BROKER lists no middleware at all but Retries
    code = """
import django, json
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django_dramatiq", "django_messenger"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    DRAMATIQ_BROKER={
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": ["dramatiq.middleware.Retries"],
    },
)
django.setup()
import dramatiq
print(json.dumps([type(m).__name__ for m in dramatiq.get_broker().middleware]))
"""
    # When Django starts
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    # Then the app added Dramatiq's CurrentMessage and django-dramatiq's DbConnectionsMiddleware
    assert result.returncode == 0, result.stderr
    names = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"CurrentMessage", "DbConnectionsMiddleware", "MessengerMiddleware", "RetryGuard"} <= set(names)
    assert len(names) == len(set(names)), names


def test_a_failure_notes_its_first_time_and_no_copy_of_dramatiqs_options() -> None:
    # Given a message that failed once already (Retries counted it)
    failing = message(retries=1, **{FIRST_FAILED_AT: 123})
    middleware = MessengerMiddleware()

    # When it fails again (messenger's hook runs before Retries counts the failure)
    middleware.after_process_message(None, failing, exception=ValueError("bad"))

    # Then the first failure time is kept, and the tries are retries + 1, on the proxy only
    assert failing.options == {RETRIES: 1, FIRST_FAILED_AT: 123}
    assert tries(failing) == 2


def test_the_first_failure_notes_the_time() -> None:
    failing = message()

    MessengerMiddleware().after_process_message(None, failing, exception=ValueError("bad"))

    assert failing.options[FIRST_FAILED_AT] <= int(time.time() * 1000)
    assert tries(failing) == 1


@pytest.mark.parametrize(("retries", "expected"), [(0, 1), (3, 4), ("x", 1), (None, 1)])
def test_the_tries_of_a_message_that_did_not_run_here_are_retries_plus_one(
    retries: Any, expected: int
) -> None:
    # A held copy, or a message rejected before it ran: nothing noted on the proxy
    assert tries(message(retries=retries)) == expected


def test_the_tries_noted_before_retries_counted_win_over_the_option() -> None:
    # Given a failure noted by messenger, then counted by Retries (retries 1 -> 2)
    failing = message(retries=1)
    MessengerMiddleware().after_process_message(None, failing, exception=ValueError("bad"))
    failing.options[RETRIES] = 2

    # Then the tries are still 2: this failure is counted once
    assert tries(failing) == 2
