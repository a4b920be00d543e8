"""The Dramatiq transport: one publish a dispatch, to the handler's actor or to a fan-out.

A message type with one handler is published straight to that handler's actor. With
several handlers the envelope is published once, to the transport's *fan-out actor*,
which in the worker sends it on to each handler's actor, so that each handler is
retried on its own and the request path makes one publish however many handlers
there are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dramatiq import Message
from dramatiq.common import current_millis

from ..delays import first_hop, hop_milliseconds
from ..encoding import decode_envelope, encode_envelope
from ..envelope import Envelope
from ..exceptions import BrokerUnavailable, MessageDecodingFailed, MessageNotDeliverable, MessengerError
from ..limits import check_envelope_size
from ..publishing import publish
from ..registry import Handler
from ..stamps import DelayStamp, SentStamp
from .base import Transport

logger = logging.getLogger("django_messenger")


class DramatiqTransport(Transport):
    """Sends envelopes to Dramatiq; ``queue_name`` is its handlers' default queue."""

    def __init__(self, name: str, queue_name: str) -> None:
        self.name = name
        self.queue_name = queue_name

    def actor_for(self, handlers: Sequence[Handler]) -> Any:
        if len(handlers) == 1:
            actor = handlers[0].actor
        else:
            from ..actors import fanout_actor

            actor = fanout_actor(self.queue_name)
        if actor is None:
            raise MessengerError(
                f"{handlers[0]!r} has no Dramatiq actor yet: is 'django_messenger' in INSTALLED_APPS "
                f"and did the app registry finish loading?"
            )
        return actor

    def send(self, envelope: Envelope, handlers: Sequence[Handler]) -> Envelope:
        """Publish ``envelope`` once.

        Raises:
          MessageTooLarge: a worker would refuse the encoded envelope; nothing was sent.
          MessageNotDeliverable: a worker would refuse it as poison (decoding fails); nothing was sent.
          BrokerUnavailable: the broker did not confirm it (``exc.envelope`` is ``envelope``).
        """
        actor = self.actor_for(handlers)
        payload = encode_envelope(envelope)
        # Measured and decoded as the worker will (limits.py, encoding.py), so that what a worker
        # would refuse as poison is never sent.
        check_envelope_size(payload)
        try:
            decode_envelope(payload)
        except MessageDecodingFailed as exc:
            logger.warning("Message %s was not sent: a worker would refuse it: %s", envelope.message_id, exc)
            raise MessageNotDeliverable(str(exc)) from exc
        stamp = envelope.last(DelayStamp)
        delay: int | None = None
        options: dict[str, Any] = {}
        if stamp is not None:  # a long delay waits one hop first (see django_messenger.delays)
            delay, options = first_hop(stamp.milliseconds, hop=hop_milliseconds(), now=current_millis())
        message: Message[Any] = Message(
            queue_name=actor.queue_name,
            actor_name=actor.actor_name,
            args=(payload,),
            kwargs={},
            options=options,
        )
        try:
            publish(actor.broker, message, delay=delay)
        except BrokerUnavailable as exc:
            exc.envelope = envelope
            logger.warning(
                "The broker did not confirm message %s (broker message %s): %s",
                envelope.message_id,
                message.message_id,
                exc.reason,
            )
            raise
        return envelope.with_stamps(
            SentStamp(transport=self.name, queue_name=actor.queue_name, broker_message_id=message.message_id)
        )
