"""Publishing: handing a Dramatiq message to its broker, bounded, and failing loudly.

:func:`publish` is the one way messenger sends (the transport, fan-out, delay hops, held
failures, ``messenger_failed retry``). How it waits for the broker depends on the broker:

* **RabbitMQ** (``RabbitmqBroker``): :class:`~.rabbitmq.ConfirmingPublisher`, a connection
  per thread, waits for the broker's confirm for at most ``MESSENGER["PUBLISH_TIMEOUT"]``
  seconds (connecting, declaring the queues and publishing included). Dramatiq's own
  ``enqueue`` would wait for that confirm with no deadline.
* **Any other broker** (Redis, the ``StubBroker`` of tests…): the broker's own ``enqueue``,
  which returns once its client says the broker took the message. Its wait is bounded by
  that client's own timeouts (Redis: ``socket_timeout`` and ``socket_connect_timeout`` in
  the broker URL), which system check W006 holds within ``PUBLISH_TIMEOUT``.

Any failure but ``MessageTooLarge`` (a broker's own size limit: nothing was sent, a 413)
becomes :class:`~django_messenger.exceptions.BrokerUnavailable`, chained to its
cause: the message was not confirmed (it may still have reached the broker). That includes an
error the broker answers, such as a Redis out of memory under ``noeviction`` (``OOM command not
allowed``): the broker refused the write, and a client's retry once it has room succeeds. A
client never gets a 500 from a send; an error that will not go away by itself (a wrong password,
a key of another type) keeps answering 503, and its reason in the log says which. Its ``reason``
says what happened, for logs; its ``detail`` what a client can do. Callers log it with what
they know (the message id).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from ..conf import messenger_settings
from ..exceptions import BrokerUnavailable, MessageTooLarge
from .rabbitmq import ConfirmingPublisher, bounded_parameters, clear_publishers, get_publisher

__all__ = ["ConfirmingPublisher", "bounded_parameters", "clear_publishers", "get_publisher", "publish"]


def publish(
    broker: Any,
    message: Message[Any],
    *,
    delay: int | None = None,
    check: Callable[[bytes], None] | None = None,
) -> Message[Any]:
    """Enqueue ``message`` on ``broker`` (``delay`` in ms); raise BrokerUnavailable unless it was accepted.

    ``check``, when given, is called with the encoded message (its body) before anything is
    sent; what it raises fails the publish as it is (not as BrokerUnavailable), nothing sent.
    On RabbitMQ that is the very body that is published, encoded once, after the broker's
    ``before_enqueue`` hooks; on another broker, whose ``enqueue`` encodes the message itself,
    an encoding made for the check. Returns the message that was sent (a copy, on the delay
    queue, when delayed). A broker that measures messages itself (``brokers.sqs.SQSBroker``)
    may raise ``MessageTooLarge``: it passes through, as nothing was sent.
    """
    refused: BaseException
    try:
        guarded = None if check is None else partial(_run_check, check)
        if isinstance(broker, RabbitmqBroker):
            publisher = get_publisher(broker, messenger_settings.PUBLISH_TIMEOUT)
            return publisher.publish(message, delay=delay, check=guarded)
        if guarded is not None:
            guarded(message.encode())
        sent: Message[Any] = broker.enqueue(message, delay=delay)
        return sent
    except (BrokerUnavailable, MessageTooLarge):  # a broker's own size limit is a 413, not a 503
        raise
    except _CheckRefused as exc:
        refused = exc.error
    except Exception as exc:
        raise BrokerUnavailable(f"The message broker did not accept the message: {describe(exc)}") from exc
    raise refused  # outside the handler: its own traceback and cause, no added context


def describe(exc: BaseException) -> str:
    """``exc``'s class and text, for a log line.

    Not ``repr(exc)``: redis-py 8's errors show only their kind and class there
    (``server:OutOfMemoryError``), without what Redis answered ("OOM command not allowed...").
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _CheckRefused(Exception):
    """Carries what a publish's ``check`` raised past the wrapping into BrokerUnavailable."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _run_check(check: Callable[[bytes], None], body: bytes) -> None:
    try:
        check(body)
    except Exception as exc:
        raise _CheckRefused(exc) from None
