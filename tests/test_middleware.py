"""MessengerMiddleware: fresh database connections for every message, and failure notes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection
from dramatiq import Message
from dramatiq.middleware import CurrentMessage

from django_messenger.failures import FIRST_FAILED_AT, TRIES
from django_messenger.middleware import MessengerMiddleware
from django_messenger.transports.dramatiq.binding import binding

pytestmark = pytest.mark.django_db(transaction=True)


def message() -> Message[Any]:
    return Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})


def in_a_thread(function: Any) -> Any:
    """Run ``function`` in another thread (a worker thread has connections of its own)."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join(10)
    return result[0]


def test_a_connection_past_its_age_is_closed_before_the_next_message():
    middleware = MessengerMiddleware()

    def two_messages() -> tuple[Any, Any, Any]:
        first = message()
        middleware.before_process_message(None, first)
        connection.ensure_connection()
        before = connection.connection
        connection.close_at = time.monotonic() - 1  # as CONN_MAX_AGE would have it
        middleware.after_process_message(None, first)
        closed = connection.connection
        second = message()
        middleware.before_process_message(None, second)
        connection.ensure_connection()
        after = connection.connection
        middleware.after_process_message(None, second)
        return before, closed, after

    before, closed, after = in_a_thread(two_messages)

    assert closed is None, "the old connection was closed after the message"
    assert after is not None and after is not before


def test_the_current_message_is_known_while_it_is_processed():
    # The app adds Dramatiq's CurrentMessage to the broker: the ReceivedStamp reads it
    [middleware] = [m for m in binding.broker.middleware if isinstance(m, CurrentMessage)]
    current = message()

    def process() -> tuple[Any, Any]:
        middleware.before_process_message(None, current)
        during = CurrentMessage.get_current_message()
        middleware.after_process_message(None, current)
        return during, CurrentMessage.get_current_message()

    assert in_a_thread(process) == (current, None)


def test_each_failure_is_noted_in_the_options_that_travel_with_a_retry():
    middleware = MessengerMiddleware()
    failing = message()

    def fail_twice() -> None:
        for _ in range(2):
            middleware.before_process_message(None, failing)
            middleware.after_process_message(None, failing, exception=ValueError("bad"))

    in_a_thread(fail_twice)

    assert failing.options[TRIES] == 2
    assert failing.options[FIRST_FAILED_AT] <= int(time.time() * 1000)
    assert "ValueError: bad" in failing.options["messenger_error"]
