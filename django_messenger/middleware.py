"""Messenger's Dramatiq middleware, added to the broker when the app is ready.

* It keeps the message being processed in a thread-local (for the ``ReceivedStamp``).
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
import threading
import time
import traceback
from typing import Any

from django.db import close_old_connections, connections
from dramatiq import Middleware
from dramatiq.middleware import SkipMessage

logger = logging.getLogger("django_messenger")

_local = threading.local()

FIRST_FAILED_AT = "messenger_first_failed_at"
TRIES = "messenger_tries"
ERROR = "messenger_error"
TRACEBACK = "messenger_traceback"


def current_message() -> Any:
    """The Dramatiq message this worker thread is processing, or None."""
    return getattr(_local, "message", None)


def _close_old_connections() -> None:
    # Inside an atomic block (a test running a worker in-process) closing would break it.
    if not any(connection.in_atomic_block for connection in connections.all(initialized_only=True)):
        close_old_connections()


#: The longest error text or traceback kept in a message's options (and so in its failure
#: record), in characters: a message must not outgrow what a worker parses
#: (``dramatiq_encoder.max_body_size``) merely because its handler raised a long error.
MAX_ERROR_TEXT = 16 * 1024


def clip(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """``text``, or its beginning and its end when it is longer than ``limit`` characters."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"


def describe(exception: BaseException) -> str:
    return f"{type(exception).__module__}.{type(exception).__qualname__}: {exception}"


class MessengerMiddleware(Middleware):
    """Worker-side bookkeeping for messenger's actors.

    ``close_connections=False`` leaves the database connections to django-dramatiq's
    ``DbConnectionsMiddleware`` when the broker has it (the app decides in ``ready()``),
    so the work is not done twice a message.
    """

    def __init__(self, *, close_connections: bool = True) -> None:
        self.close_connections = close_connections

    def before_process_message(self, broker: Any, message: Any) -> None:
        from .failures import HELD, keep_held

        if HELD in message.options:
            # A failure held while the database was down: record it, never run the handler.
            if not keep_held(message):
                message.fail()  # neither recorded nor held again: dead-letter it
            raise SkipMessage("a held failure, not a message to handle")
        _local.message = message
        if self.close_connections:
            _close_old_connections()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        _local.message = None
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

    def after_skip_message(self, broker: Any, message: Any) -> None:
        _local.message = None

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        # Dramatiq's Retries stores the last traceback, the exception's text included, unclipped.
        trace = message.options.get("traceback")
        if isinstance(trace, str) and len(trace) > MAX_ERROR_TEXT:
            message.options["traceback"] = clip(trace)

    def before_nack(self, broker: Any, message: Any) -> None:
        """Dramatiq is about to dead-letter ``message``: keep its failure in the database."""
        from .failures import HELD, is_messenger_message, keep, keep_held

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
