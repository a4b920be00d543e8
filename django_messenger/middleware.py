"""Messenger's Dramatiq middleware, added to the broker when the app is ready.

* It gives every handler fresh database connections: Django's stale or broken
  connections are closed before and after each message, as a request would (unless
  django-dramatiq's ``DbConnectionsMiddleware``, which does the same, is on the broker).
* It notes each failure in the message's options (first failure time, tries, error,
  traceback), and before Dramatiq dead-letters one of messenger's messages it writes a
  :class:`~django_messenger.models.FailedMessage`, so that the failure outlives
  RabbitMQ's dead-letter queue and can be retried (``messenger_failed``). While the
  database is down the failure is held on the broker and recorded later: a held copy
  (see :mod:`django_messenger.failures`) is recorded here instead of being handled.

It must run after Dramatiq's ``Retries`` middleware in the broker's list (the app
appends it at the end when it is not listed).
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from django.db import close_old_connections, connections
from dramatiq import Middleware
from dramatiq.middleware import SkipMessage

from .failures import (
    ERROR,
    FIRST_FAILED_AT,
    HELD,
    MAX_ERROR_TEXT,
    TRACEBACK,
    TRIES,
    clip,
    describe,
    is_messenger_message,
    keep,
    keep_held,
)

logger = logging.getLogger("django_messenger")


def _close_old_connections() -> None:
    # Inside an atomic block (a test running a worker in-process) closing would break it.
    if not any(connection.in_atomic_block for connection in connections.all(initialized_only=True)):
        close_old_connections()


class MessengerMiddleware(Middleware):
    """Worker-side bookkeeping for messenger's actors.

    ``close_connections=False`` leaves the database connections to django-dramatiq's
    ``DbConnectionsMiddleware`` when the broker has it (the app decides in ``ready()``),
    so the work is not done twice a message.
    """

    def __init__(self, *, close_connections: bool = True) -> None:
        self.close_connections = close_connections

    def before_process_message(self, broker: Any, message: Any) -> None:
        if HELD in message.options:
            # A failure held while the database was down: record it, never run the handler.
            if not keep_held(message):
                message.fail()  # neither recorded nor held again: dead-letter it
            raise SkipMessage("a held failure, not a message to handle")
        if self.close_connections:
            _close_old_connections()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is not None:
            # Runs before Retries re-enqueues the message, so these options travel with it.
            options = message.options
            options.setdefault(FIRST_FAILED_AT, int(time.time() * 1000))
            options[TRIES] = int(options.get(TRIES, 0)) + 1
            options[ERROR] = clip(describe(exception))
            options[TRACEBACK] = clip(
                "".join(
                    traceback.format_exception(type(exception), exception, exception.__traceback__, limit=30)
                )
            )
        if self.close_connections:
            _close_old_connections()

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        # Dramatiq's Retries stores the last traceback, the exception's text included, unclipped.
        trace = message.options.get("traceback")
        if isinstance(trace, str) and len(trace) > MAX_ERROR_TEXT:
            message.options["traceback"] = clip(trace)

    def before_nack(self, broker: Any, message: Any) -> None:
        """Dramatiq is about to dead-letter ``message``: keep its failure in the database."""
        if HELD in message.options:
            # A held copy rejected before it could be processed (an actor this worker lacks, or
            # it could be neither recorded nor held again just now): one more attempt.
            keep_held(message)
            return
        if not is_messenger_message(message):
            return
        options = message.options
        error = options.get(ERROR)
        trace = options.get(TRACEBACK, "")
        stuffed = getattr(message, "_exception", None)
        if error is None and stuffed is not None:
            error = clip(describe(stuffed))
            trace = clip(
                "".join(traceback.format_exception(type(stuffed), stuffed, stuffed.__traceback__, limit=30))
            )
        keep(message, error=error or "Dead-lettered by Dramatiq.", traceback=trace)
