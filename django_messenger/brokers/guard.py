"""Consumers that dead-letter a Dramatiq message whose fields Dramatiq's worker would trip on.

Dramatiq's worker trusts the fields of a message it decoded. It acknowledges a message through
the consumer of the message's own ``queue_name``: a name the worker does not consume raises a
``KeyError`` that ends the worker thread, and the message is never acknowledged (its queue, or
on Kafka its partition, stays stuck behind it). It reads ``options`` as a dict and
``actor_name`` as a string: another type raises in the consumer thread, which Dramatiq restarts,
to read the same message again, forever. Whoever can write to a queue can forge such a message
(docs/reliability.md: the broker's access control is the trust boundary).

:func:`guard_consumers` wraps every consumer of a broker (any broker: Dramatiq's own and
messenger's) so that such a message is dead-lettered as it arrives, with a log line, as
Dramatiq's consumers do with bytes that are not a message at all. The app guards its broker
when it is ready.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from dramatiq import get_encoder
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import ConnectionClosed

from ..dramatiq_encoder import FIELD_TYPES, BoundedJSONEncoder, FieldCheckingEncoder, wrong_field

logger = logging.getLogger("django_messenger")

#: Set on a broker whose ``consume`` is guarded (once, however often the app is made ready).
GUARDED = "messenger_guarded_consumers"


def malformed(message: Any, queue_name: str, *, fields_checked: bool = False) -> str | None:
    """Why Dramatiq's worker cannot process ``message`` received on ``queue_name``, or None.

    The project's encoder refuses a field of the wrong type while decoding already (the app makes
    every encoder do so), where every broker dead-letters the body as it came; this looks again
    only for an encoder set after the app was ready, and for the one thing decoding cannot know:
    the queue.
    """
    if message.queue_name != queue_name:
        return f"it names the queue {message.queue_name!r}"
    if fields_checked:  # by the project's encoder, while decoding
        return None
    problem = wrong_field({name: getattr(message, name) for name in FIELD_TYPES})
    if problem is not None:
        return f"its {problem!r} is not of the type a Dramatiq message has"
    return None


class GuardedConsumer(Consumer):
    """A broker's consumer of ``queue_name`` that dead-letters (nacks) malformed messages."""

    def __init__(self, consumer: Consumer, queue_name: str) -> None:
        self.consumer = consumer
        self.queue_name = queue_name
        #: The project's encoder refuses fields of the wrong type itself (the app makes it so, see
        #: dramatiq_encoder.check_fields_when_decoding): only the queue is left.
        self.fields_checked = isinstance(get_encoder(), BoundedJSONEncoder | FieldCheckingEncoder)

    def __iter__(self) -> GuardedConsumer:
        return self

    def __next__(self) -> MessageProxy | None:
        message = next(self.consumer)
        if message is None:
            return None
        problem = malformed(message, self.queue_name, fields_checked=self.fields_checked)
        if problem is None:
            return message
        logger.error(
            "A message on queue %r cannot be processed (%s): it is dead-lettered.",
            self.queue_name,
            problem,
        )
        # Dead-lettered where it came from: a broker may find the message by its queue's name
        # (dramatiq-postgres' rows), and the name it gave is the one not to trust.
        message.queue_name = self.queue_name
        try:
            self.consumer.nack(message)
        except ConnectionClosed:
            raise  # as from next(): the worker reconnects, and the message comes back
        except Exception:  # a forged message may lack what the broker's nack reads (Redis' id)
            logger.exception(
                "A message on queue %r could not be dead-lettered: it stays with this worker "
                "unacknowledged until the broker gives it to a worker again.",
                self.queue_name,
            )
        return None  # the worker asks again

    def ack(self, message: MessageProxy) -> None:
        self.consumer.ack(message)

    def nack(self, message: MessageProxy) -> None:
        self.consumer.nack(message)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        self.consumer.requeue(messages)

    def close(self) -> None:
        self.consumer.close()

    def __getattr__(self, name: str) -> Any:
        # Anything else a broker's consumer offers (a worker or a test may read it)
        return getattr(self.consumer, name)


def guard_consumers(broker: Any) -> None:
    """Make every consumer ``broker`` opens from now on a :class:`GuardedConsumer` (once)."""
    if getattr(broker, GUARDED, False):
        return
    consume = broker.consume

    def guarded_consume(queue_name: str, *args: Any, **kwargs: Any) -> Consumer:
        return GuardedConsumer(consume(queue_name, *args, **kwargs), queue_name)

    broker.consume = guarded_consume
    setattr(broker, GUARDED, True)
