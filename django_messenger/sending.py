"""Handing a Dramatiq message to the broker, bounded, and failing loudly.

RabbitMQ brokers go through :mod:`django_messenger.publishing`, which waits for the
broker's confirm for at most ``MESSENGER["PUBLISH_TIMEOUT"]`` seconds. Other brokers
(Redis, the StubBroker of tests) use the broker's own ``enqueue``. Any failure
becomes :class:`~django_messenger.exceptions.BrokerUnavailable`: nothing was sent.
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq import Message

from .exceptions import BrokerUnavailable

logger = logging.getLogger("django_messenger")


def publish(broker: Any, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
    """Enqueue ``message`` on ``broker``; raise BrokerUnavailable unless it was accepted."""
    try:
        sent: Message[Any] = broker.enqueue(message, delay=delay)
        return sent
    except BrokerUnavailable:
        raise
    except Exception as exc:
        logger.warning("The broker refused message %s: %s", message.message_id, exc)
        raise BrokerUnavailable(f"The message broker did not accept the message: {exc}") from exc
