"""Long delays in hops, so that no broker holds a delayed message longer than it can.

Dramatiq's workers hold a delayed message unacknowledged until it is due. RabbitMQ closes
the channel of a consumer that holds a message longer than its ``consumer_timeout``
(30 minutes by default) and redelivers it, over and over; SQS refuses delays over 15
minutes. So a delay longer than ``MESSENGER["DELAY_HOP"]`` seconds is sent in hops:

* the transport publishes the message with a delay of one hop and records its absolute
  due time in the Dramatiq message's options (:data:`ETA`, epoch milliseconds);
* in the worker, :class:`DelayHopMiddleware` sees the message before its actor runs: if it
  is not due yet, it publishes the same message (same ids, same envelope) again with the
  next hop, then skips it, so Dramatiq acknowledges it. A due message goes on as usual.

If that publish fails, the message is not acknowledged: it is dead-lettered (and stored as a
``FailedMessage``), as a message whose retries ran out would be, never dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq import Middleware
from dramatiq.common import current_millis
from dramatiq.middleware import SkipMessage

from .conf import messenger_settings
from .exceptions import BrokerUnavailable
from .publishing import publish

logger = logging.getLogger("django_messenger")

#: The Dramatiq message option that carries a hopping message's due time (epoch milliseconds).
ETA = "messenger_eta"


class DelayHopFailed(SkipMessage):
    """A message that is not due yet could not be sent on to its next hop.

    Raised (a ``SkipMessage``, so no handler runs and Dramatiq's ``Retries`` is not asked)
    after the message was marked failed: Dramatiq rejects it instead of acknowledging it.
    """


def hop_milliseconds() -> int:
    """``MESSENGER["DELAY_HOP"]`` in milliseconds."""
    return max(1, int(messenger_settings.DELAY_HOP * 1000))


def first_hop(delay: int, *, hop: int, now: int) -> tuple[int, dict[str, int]]:
    """The delay to publish a message with, and the options to add, for a ``delay`` in ms.

    A delay of at most one ``hop`` is sent as it is; a longer one waits one hop and
    carries its due time (``now + delay``) in the :data:`ETA` option.
    """
    if delay <= hop:
        return delay, {}
    return hop, {ETA: now + delay}


def next_hop(eta: int, *, hop: int, now: int) -> int | None:
    """The milliseconds a message due at ``eta`` must wait again, or None when it is due."""
    remaining = eta - now
    if remaining <= 0:
        return None
    return min(remaining, hop)


def due_time(message: Any) -> int | None:
    """The :data:`ETA` option of a Dramatiq message, or None when it has none (or a broken one)."""
    eta = message.options.get(ETA)
    if eta is None:
        return None
    if isinstance(eta, bool) or not isinstance(eta, int):
        logger.warning(
            "Message %s has a %s option that is not a time: %r; it is handled now.",
            message.message_id,
            ETA,
            eta,
        )
        return None
    return eta


#: Marks a message (its MessageProxy) that was sent on to its next hop.
HOPPED = "messenger_hopped"


class QuietHops(logging.Filter):
    """Drops the warning Dramatiq's worker logs for each skipped message, for hops only.

    A hop is routine (a 24-hour delay makes 144 of them with the default hop), not a warning;
    other skipped messages keep theirs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and args and getattr(args[0], HOPPED, False) is True)


class DelayHopMiddleware(Middleware):
    """Sends a message that is not due yet on to its next hop instead of handling it.

    The app adds it at the end of the broker's middleware when it is not listed.
    """

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        worker_logger = logging.getLogger("dramatiq.worker.WorkerThread")
        if not any(isinstance(existing, QuietHops) for existing in worker_logger.filters):
            worker_logger.addFilter(QuietHops())

    def before_process_message(self, broker: Any, message: Any) -> None:
        eta = due_time(message)
        if eta is None:
            return
        delay = next_hop(eta, hop=hop_milliseconds(), now=current_millis())
        if delay is None:
            return
        try:
            publish(broker, message.copy(), delay=delay)
        except BrokerUnavailable as exc:
            logger.error(
                "Message %s is due in %d ms but could not be sent on to its next hop; "
                "it is dead-lettered instead: %s",
                message.message_id,
                eta - current_millis(),
                exc.reason,
            )
            message.fail()
            raise DelayHopFailed(
                f"The message could not be sent on to its next delay hop: {exc.reason}"
            ) from exc
        logger.debug("Message %s is not due yet: sent on to wait %d ms more.", message.message_id, delay)
        setattr(message, HOPPED, True)
        raise SkipMessage(f"Message {message.message_id} is not due yet.")
