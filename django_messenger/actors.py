"""Handlers as Dramatiq actors, and the fan-out actor of each queue.

A handler's actor receives the encoded envelope as its only argument, decodes it
(only registered types resolve) and calls the handler. A message that cannot be
decoded raises :class:`MessageDecodingFailed`, which is in every handler's
``throws``: it is never retried, it goes straight to the dead letters.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq import Message

from .conf import messenger_settings
from .encoding import decode_envelope
from .exceptions import MessageDecodingFailed
from .execution import call_handler
from .limits import check_envelope_size
from .middleware import current_message
from .publishing import publish
from .registry import DEFAULT_ACTOR_OPTIONS, Handler, registry
from .stamps import ReceivedStamp

logger = logging.getLogger("django_messenger")

FANOUT_PREFIX = "django_messenger.fanout."


def _received(payload: Any) -> Any:
    check_envelope_size(payload)
    envelope = decode_envelope(payload)
    message = current_message()
    if message is not None:
        envelope = envelope.with_stamps(
            ReceivedStamp(
                queue_name=message.queue_name,
                broker_message_id=message.message_id,
                retries=int(message.options.get("retries", 0)),
            )
        )
    return envelope


def declare_handler_actor(handler: Handler, broker: Any) -> Any:
    """Declare ``handler`` as an actor of ``broker``, with messenger's retry defaults."""
    from .routing import transport_name_for

    options = dict(handler.options)
    if "max_retries" in broker.actor_options:
        for key, value in DEFAULT_ACTOR_OPTIONS.items():
            options.setdefault(key, value)
    if "throws" in broker.actor_options:
        throws = options.get("throws") or ()
        if isinstance(throws, type):
            throws = (throws,)
        options["throws"] = (MessageDecodingFailed, *tuple(throws))
    queue_name = handler.queue_name
    if queue_name is None:
        assert handler.message_type is not None
        transport = transport_name_for(registry.name_of(handler.message_type))
        if transport not in messenger_settings.TRANSPORTS:
            transport = "async"
        queue_name = messenger_settings.queue_name(transport)

    def run(payload: Any) -> None:
        # What the handler returns is for synchronous dispatches only: a worker drops it.
        envelope = _received(payload)
        if type(envelope.message) is not handler.message_type:
            raise MessageDecodingFailed(
                f"{handler.actor_name} handles {handler.message_type!r}, not {type(envelope.message)!r}."
            )
        call_handler(handler, envelope)

    run.__name__ = getattr(handler.fn, "__name__", "handler")
    run.__qualname__ = getattr(handler.fn, "__qualname__", run.__name__)
    run.__module__ = handler.fn.__module__
    run.__doc__ = handler.fn.__doc__
    actor = dramatiq.actor(  # type: ignore[call-overload]
        run,
        broker=broker,
        actor_name=handler.actor_name,
        queue_name=queue_name,
        priority=handler.priority,
        **options,
    )
    actor.messenger_handler = handler
    return actor


def fanout_actor(queue_name: str) -> Any:
    """The fan-out actor of ``queue_name`` (declared when the registry was bound)."""
    broker = registry.broker
    if broker is None:
        return None
    return broker.actors.get(FANOUT_PREFIX + queue_name)


def declare_fanout_actors(broker: Any) -> None:
    """One fan-out actor on the queue of each Dramatiq transport."""
    queues = {messenger_settings.queue_name(name) for name in messenger_settings.TRANSPORTS}
    for queue_name in sorted(queues):
        actor_name = FANOUT_PREFIX + queue_name
        if actor_name in broker.actors:
            continue
        options: dict[str, Any] = {}
        if "throws" in broker.actor_options:
            options["throws"] = (MessageDecodingFailed,)
        if "max_retries" in broker.actor_options:
            options.update(DEFAULT_ACTOR_OPTIONS)
        dramatiq.actor(  # type: ignore[call-overload]
            fan_out, broker=broker, actor_name=actor_name, queue_name=queue_name, **options
        )


def fan_out(payload: Any) -> None:
    """Send ``payload`` on to the actor of every handler of its type (in the worker)."""
    check_envelope_size(payload)
    envelope = decode_envelope(payload)  # validates the type and the body before anything is sent
    if not registry.has_handlers(type(envelope.message)):
        raise MessageDecodingFailed(f"No handler for {type(envelope.message)!r} in this worker.")
    for handler in registry.handlers_for(type(envelope.message)):
        if handler.actor is None:
            continue
        message: Message[Any] = Message(
            queue_name=handler.actor.queue_name,
            actor_name=handler.actor.actor_name,
            args=(payload,),
            kwargs={},
            options={},
        )
        publish(handler.actor.broker, message)
