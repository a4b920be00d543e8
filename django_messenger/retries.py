"""A failed message is not acknowledged until its retry is safely on the broker.

When an actor raises, Dramatiq's ``Retries`` middleware re-enqueues the message (with a
delay) from its ``after_process_message`` hook, and the worker then acknowledges the
original. If that enqueue raises (a RabbitMQ memory or disk alarm blocks publishers while
consumers can still ack; the broker is unreachable), ``Broker.emit_after`` only logs the
error and the original is acknowledged all the same: the message is gone, neither retried
nor dead-lettered.

:class:`RetryGuard` closes that hole. It watches the enqueue hooks of the message its
worker thread is processing (``before_enqueue`` / ``after_enqueue``, keyed by the message
id, which a retry keeps) and, running after ``Retries`` (it sits *before* it in the
broker's list: Dramatiq runs after-hooks in reverse order), fails the message when a retry
was due but its enqueue did not complete. The worker then rejects it: the broker
dead-letters it, and messenger's failure store records it with an error saying that the
retry could not be enqueued, so ``messenger_failed retry`` can send it again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from dramatiq import Middleware

from .failures import ERROR, clip, describe

__all__ = ["RETRY_NOT_ENQUEUED", "RetryGuard"]

logger = logging.getLogger("django_messenger")

#: The start of the error recorded for a message whose retry could not be enqueued.
RETRY_NOT_ENQUEUED = "Its retry could not be enqueued (the broker did not accept it)"


@dataclass
class _Processing:
    """The message a worker thread is processing, and whether its retry reached the broker."""

    message_id: str
    enqueued: bool = False


class RetryGuard(Middleware):
    """Fail (dead-letter) a message whose retry could not be enqueued, instead of acking it.

    Must come before Dramatiq's ``Retries`` in the broker's middleware list; the app adds
    it there (``before=Retries``) when the broker has ``Retries``.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def before_process_message(self, broker: Any, message: Any) -> None:
        self._local.processing = _Processing(message.message_id)

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        processing: _Processing | None = getattr(self._local, "processing", None)
        if processing is not None and message.message_id == processing.message_id:
            processing.enqueued = True

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self._local.processing = None

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        processing: _Processing | None = getattr(self._local, "processing", None)
        self._local.processing = None
        if exception is None or message.failed:
            return  # succeeded, or Retries gave up on it: Dramatiq acks or dead-letters it as usual
        if processing is not None and processing.enqueued:
            return  # the retry is on the broker: acking the original is safe
        logger.error(
            "The retry of message %s could not be enqueued: it is dead-lettered instead of acknowledged.",
            message.message_id,
        )
        message.options[ERROR] = clip(f"{RETRY_NOT_ENQUEUED}. Last error: {describe(exception)}")
        message.fail()
