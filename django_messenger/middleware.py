"""Messenger's Dramatiq middleware, added to the broker when the app is ready.

Before Dramatiq dead-letters one of messenger's messages it writes a
:class:`~django_messenger.models.FailedMessage`, so that the failure outlives RabbitMQ's
dead-letter queue and can be retried (``messenger_failed``). While the database is down
the failure is held on the broker and recorded later: a held copy (see
:mod:`django_messenger.failures`) is recorded here instead of being handled.

What the failure store needs comes from Dramatiq's own parts wherever Dramatiq has them:

* the tries: Dramatiq's ``retries`` option (``Retries`` counts each retried failure), plus
  the final failure (:func:`~django_messenger.failures.tries`);
* the error and its traceback: the exception the worker stuffed into the message;
* the time of the first failure, which Dramatiq does not keep: the one option messenger
  adds to a failing message, :data:`~django_messenger.failures.FIRST_FAILED_AT`, so that it
  travels with the retries.

The app also puts Dramatiq's ``CurrentMessage`` (for the ``ReceivedStamp``) and
django-dramatiq's ``DbConnectionsMiddleware`` (fresh database connections for every
message) on the broker when they are missing. This middleware must run after Dramatiq's
``Retries`` in the broker's list (the app appends it at the end when it is not listed).
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from dramatiq import Middleware
from dramatiq.middleware import SkipMessage

from . import tracking
from .brokers import FAILURE_NOT_KEPT
from .failures import (
    ERROR,
    FIRST_FAILED_AT,
    HELD,
    MAX_ERROR_TEXT,
    TRACEBACK,
    TRIES_ATTRIBUTE,
    clip,
    describe,
    format_traceback,
    is_messenger_message,
    keep,
    keep_held,
    tries,
)
from .locator import locator

logger = logging.getLogger("django_messenger")


class MessengerMiddleware(Middleware):
    """Worker-side bookkeeping for messenger's actors: failures noted and stored."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        if HELD in message.options:
            # A failure held while the database was down: record it, never run the handler.
            if not keep_held(message):
                message.fail()  # neither recorded nor held again: dead-letter it
            raise SkipMessage("a held failure, not a message to handle")

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None:
            if (
                message.args
                and tracking.track_stamp(message.args[0]) is not None
                and locator.handler_named(message.actor_name) is not None
            ):
                # A handler (not a fan-out) handled a tracked message: its status. An untracked
                # message costs only the look for its stamp.
                tracking.record_quietly(
                    message.args[0], handler=message.actor_name, failed=False, sent_at=_sent_at(message)
                )
            return
        # Runs before Retries counts the failure and re-enqueues the message.
        message.options.setdefault(FIRST_FAILED_AT, int(time.time() * 1000))
        with contextlib.suppress(AttributeError):  # a bare Message (frozen), not the worker's proxy
            setattr(message, TRIES_ATTRIBUTE, tries(message))

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        # Dramatiq's Retries stores the last traceback, the exception's text included, unclipped.
        trace = message.options.get(TRACEBACK)
        if isinstance(trace, str) and len(trace) > MAX_ERROR_TEXT:
            message.options[TRACEBACK] = clip(trace)

    def before_nack(self, broker: Any, message: Any) -> None:
        """Dramatiq is about to dead-letter ``message``: keep its failure in the database."""
        if HELD in message.options:
            # A held copy rejected before it could be processed (an actor this worker lacks, or
            # it could be neither recorded nor held again just now): one more attempt.
            setattr(message, FAILURE_NOT_KEPT, not keep_held(message))
            return
        if not is_messenger_message(message):
            return
        stuffed = getattr(message, "_exception", None)
        if stuffed is not None:  # the exception the worker caught, as Dramatiq keeps it
            error, trace = clip(describe(stuffed)), format_traceback(stuffed)
        else:  # rejected before it ran, or without an exception
            error, trace = "Dead-lettered by Dramatiq.", clip(str(message.options.get(TRACEBACK) or ""))
        # RetryGuard's error (a retry that could not be enqueued) says more than the exception.
        error = message.options.get(ERROR) or error
        if message.args:  # a tracked message's status reads "failed" (fan-out: for every handler)
            tracking.record_quietly(
                message.args[0], handler=message.actor_name, failed=True, sent_at=_sent_at(message)
            )
        # Neither stored nor held: a broker that is the database refuses the rejection until it is
        # (brokers/postgres.py); Dramatiq then tries the rejection again, and this hook with it.
        kept = keep(message, error=error, traceback=trace, tries=tries(message))
        setattr(message, FAILURE_NOT_KEPT, not kept)


def _sent_at(message: Any) -> datetime | None:
    """When the broker message was enqueued (Dramatiq's ``message_timestamp``)."""
    try:
        return datetime.fromtimestamp(int(message.message_timestamp) / 1000, tz=UTC)
    except (AttributeError, TypeError, ValueError, OverflowError, OSError):
        return None
