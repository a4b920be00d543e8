"""Handing a Dramatiq message to the broker, bounded, and failing loudly.

RabbitMQ brokers go through :mod:`django_messenger.publishing` (a connection per thread)
or, with ``MESSENGER["PUBLISHER"] = "pipelined"``, :mod:`django_messenger.pipelining` (one
I/O thread per process); both wait for the broker's confirm for at most
``MESSENGER["PUBLISH_TIMEOUT"]`` seconds. Other brokers
(Redis, the StubBroker of tests) use the broker's own ``enqueue``. Any failure
becomes :class:`~django_messenger.exceptions.BrokerUnavailable`: the message was not
confirmed (it may still have reached the broker). Callers log it with what they know.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from .conf import messenger_settings
from .exceptions import BrokerUnavailable
from .pipelining import get_pipelined_publisher
from .publishing import get_publisher


def publish(broker: Any, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
    """Enqueue ``message`` on ``broker``; raise BrokerUnavailable unless it was accepted."""
    try:
        if isinstance(broker, RabbitmqBroker):
            timeout = messenger_settings.PUBLISH_TIMEOUT
            if messenger_settings.PUBLISHER == "pipelined":
                return get_pipelined_publisher(broker, timeout).publish(message, delay=delay)
            return get_publisher(broker, timeout).publish(message, delay=delay)
        sent: Message[Any] = broker.enqueue(message, delay=delay)
        return sent
    except BrokerUnavailable:
        raise
    except Exception as exc:
        raise BrokerUnavailable(f"The message broker did not accept the message: {exc!r}") from exc
