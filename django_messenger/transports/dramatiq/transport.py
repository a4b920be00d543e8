"""The Dramatiq transport: one publish a dispatch, to the handler's actor or to a fan-out.

A message type with one handler is published straight to that handler's actor. With
several handlers the envelope is published once, to the transport's *fan-out actor*,
which in the worker sends it on to each handler's actor, so that each handler is
retried on its own and the request path makes one publish however many handlers
there are. Which actor that is, the binding says (:mod:`.binding`).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from dramatiq import get_encoder
from dramatiq.common import current_millis

from ...conf import messenger_settings
from ...delays import first_hop, hop_milliseconds
from ...dramatiq_encoder import body_bounds_envelope
from ...encoding import check_envelope, encode_envelope
from ...envelope import Envelope
from ...exceptions import BrokerUnavailable, MessageDecodingFailed, MessageNotDeliverable
from ...limits import check_envelope_size
from ...publishing import publish
from ...stamps import DelayStamp, SentStamp
from ..base import Transport
from .binding import binding

logger = logging.getLogger("django_messenger")


class DramatiqTransport(Transport):
    """Sends envelopes to Dramatiq; ``queue_name`` is its handlers' default queue (the binding's choice)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue_name = binding.transport_queue(name)

    def encode(self, envelope: Envelope) -> dict[str, Any]:
        """``envelope`` encoded, measured and decoded as a worker will (limits.py, encoding.py).

        Raises:
          MessageTooLarge: a worker would refuse the encoded envelope.
          MessageNotDeliverable: a worker would refuse it as poison (decoding fails).
        """
        payload = encode_envelope(envelope)
        check_envelope_size(payload)
        _check_decodable(envelope, payload)
        return payload

    def check(self, envelope: Envelope) -> None:
        self.encode(envelope)

    def transaction_alias(self) -> str | None:
        """The broker's ``database`` when it writes on the caller's connection (brokers/postgres.py)."""
        broker = binding.broker
        if broker is None or not getattr(broker, "transactional", False):
            return None
        return str(broker.database)

    def send(self, envelope: Envelope) -> Envelope:
        """Publish ``envelope`` once.

        The envelope is encoded once; the publish measures it against ``MAX_MESSAGE_SIZE`` and
        decodes it as a worker will (on the body it encodes anyway) before anything is sent.

        Raises:
          NoHandlerForMessage: the message's type has no handler; nothing was sent.
          MessageTooLarge: a worker would refuse the encoded envelope; nothing was sent.
          MessageNotDeliverable: a worker would refuse it as poison (decoding fails); nothing was sent.
          BrokerUnavailable: the broker did not confirm it (``exc.envelope`` is ``envelope``).
        """
        actor = binding.target(type(envelope.message), self.name)
        payload = encode_envelope(envelope)
        stamp = envelope.last(DelayStamp)
        delay: int | None = None
        options: dict[str, Any] = {}
        if stamp is not None:  # a long delay waits one hop first (see django_messenger.delays)
            delay, options = first_hop(stamp.milliseconds, hop=hop_milliseconds(), now=current_millis())
        message = actor.message_with_options(args=(payload,), **options)
        try:
            # Measured and dry-run decoded by the publish, on the body it encodes anyway.
            publish(actor.broker, message, delay=delay, check=partial(_check_body, envelope, payload))
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


def _check_body(envelope: Envelope, payload: dict[str, Any], body: bytes) -> None:
    """What :meth:`DramatiqTransport.encode` checks, for a message about to be published as ``body``.

    A body of at most ``MAX_MESSAGE_SIZE`` bytes holds an envelope within the limit when the
    Dramatiq encoder writes the envelope as the limit measures it (compact JSON, see
    :func:`~django_messenger.dramatiq_encoder.body_bounds_envelope`): then the envelope is not
    encoded again to be measured. Otherwise it is, as a worker measures it.
    """
    limit = messenger_settings.MAX_MESSAGE_SIZE
    if limit and (len(body) > limit or not body_bounds_envelope(get_encoder())):
        check_envelope_size(payload)
    _check_decodable(envelope, payload)


def _check_decodable(envelope: Envelope, payload: dict[str, Any]) -> None:
    """Raise MessageNotDeliverable when a worker would refuse ``payload`` as poison."""
    try:
        check_envelope(payload)
    except MessageDecodingFailed as exc:
        logger.warning("Message %s was not sent: a worker would refuse it: %s", envelope.message_id, exc)
        raise MessageNotDeliverable(str(exc)) from exc
