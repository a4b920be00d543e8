"""Handlers bound to Dramatiq: one actor per handler, and the fan-out actor of each queue.

The app's ``ready()`` calls :meth:`Binding.bind` once with django-dramatiq's broker; it
declares an actor for every handler the locator holds, a fan-out actor on the queue of
each Dramatiq transport, and, through the locator's ``handler_registered`` signal, an
actor for every handler declared later. This module alone decides a handler actor's
queue (:meth:`Binding.queue_of`) and finds the actor a dispatch is published to
(:meth:`Binding.target`).

A handler's actor receives the encoded envelope as its only argument, decodes it (only
registered types resolve) and calls the handler (through :func:`django_messenger.once.call`:
an idempotent handler runs once per message). A message that cannot be decoded
raises :class:`MessageDecodingFailed`, which is in every handler's ``throws``: it is
never retried, it goes straight to the dead letters. A fan-out actor decodes the
envelope and sends it on to the actor of every handler of its type, so each handler is
retried on its own.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
from django.core.exceptions import ImproperlyConfigured
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage

from ...brokers.rabbitmq import CLASSIC, QUEUE_TYPES, QUORUM, use_queue_types
from ...conf import SYNC_TRANSPORT, messenger_settings
from ...dramatiq_encoder import needs_measuring
from ...encoding import decode_envelope
from ...envelope import Envelope
from ...exceptions import HandlerError, HandlerErrorCode, MessageDecodingFailed, MessengerError
from ...limits import check_envelope_size
from ...locator import Handler, handler_registered, locator
from ...message_types import message_types
from ...once import call
from ...publishing import publish
from ...routing import transport_name_for
from ...stamps import ReceivedStamp

logger = logging.getLogger("django_messenger")

FANOUT_PREFIX = "django_messenger.fanout."

#: Messenger's retry defaults, replacing Dramatiq's weeks-long ones.
DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {"max_retries": 3, "min_backoff": 1_000, "max_backoff": 300_000}

#: The transport whose queue a handler routed elsewhere (``sync``, an unknown name) gets.
FALLBACK_TRANSPORT = "async"


class Binding:
    """The broker messenger is bound to, and the actors declared on it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._broker: Any = None

    @property
    def broker(self) -> Any:
        return self._broker

    def bind(self, broker: Any) -> None:
        """Declare every handler, and a fan-out actor per transport queue, on ``broker`` (from ready())."""
        with self._lock:
            self._broker = broker
            if isinstance(broker, RabbitmqBroker):
                use_queue_types(broker, self.queue_type)  # quorum queues where a transport asks
            for handler in list(locator.handlers):
                self.declare(handler)
            self.declare_fanout_actors()

    # -- queues -------------------------------------------------------------------

    @staticmethod
    def dramatiq_transport(transport: str) -> str:
        """``transport`` when it sends to Dramatiq; ``async`` for ``sync`` and unknown names."""
        if transport == SYNC_TRANSPORT or transport not in messenger_settings.TRANSPORTS:
            return FALLBACK_TRANSPORT
        return transport

    @classmethod
    def transport_queue(cls, transport: str) -> str:
        """The queue of Dramatiq transport ``transport``; ``sync`` and unknown names get the async one's."""
        return messenger_settings.queue_name(cls.dramatiq_transport(transport))

    def transport_of(self, handler: Handler) -> str:
        """The Dramatiq transport of ``handler``'s actor: its type's routed one (``async`` for ``sync``)."""
        assert handler.message_type is not None
        return self.dramatiq_transport(transport_name_for(message_types.name_of(handler.message_type)))

    def queue_of(self, handler: Handler) -> str:
        """The queue of ``handler``'s actor: its own ``queue_name``, else its routed transport's."""
        if handler.queue_name is not None:
            return handler.queue_name
        return messenger_settings.queue_name(self.transport_of(handler))

    def queue_transports(self, queue_name: str) -> set[str]:
        """The Dramatiq transports whose messages go to ``queue_name``: those whose queue it is,
        and those of the handlers whose own ``queue_name`` it is."""
        transports = {
            name
            for name in messenger_settings.TRANSPORTS
            if name != SYNC_TRANSPORT and messenger_settings.queue_name(name) == queue_name
        }
        for handler in list(locator.handlers):
            if (
                handler.error is None
                and handler.message_type is not None
                and self.queue_of(handler) == queue_name
            ):
                transports.add(self.transport_of(handler))
        return transports

    def queue_type(self, queue_name: str) -> str:
        """The type of ``queue_name``'s queues: its transports' ``queue_type``; ``"classic"`` for a
        queue no transport sends to. Quorum when the transports disagree (E014 names them).

        Raises ImproperlyConfigured for a ``queue_type`` that is neither (E014): no queue is
        declared with a type nobody asked for.
        """
        types = {name: messenger_settings.queue_type(name) for name in self.queue_transports(queue_name)}
        for name, value in sorted(types.items()):
            if value not in QUEUE_TYPES:
                raise ImproperlyConfigured(
                    f"MESSENGER['TRANSPORTS'][{name!r}]['queue_type'] is {value!r}: use one of "
                    f"{', '.join(map(repr, QUEUE_TYPES))} (system check django_messenger.E014)."
                )
        return QUORUM if QUORUM in types.values() else CLASSIC

    # -- actors -------------------------------------------------------------------

    def actor_of(self, handler: Handler) -> Any:
        """``handler``'s actor, or None when it has none (not bound yet, or refused)."""
        if self._broker is None or handler.error is not None:
            return None
        actor = self._broker.actors.get(handler.actor_name)
        if actor is None or getattr(actor, "messenger_handler", None) is not handler:
            return None
        return actor

    def actor_named(self, actor_name: str) -> Any:
        """The handler or fan-out actor named ``actor_name``, or None."""
        if actor_name.startswith(FANOUT_PREFIX):
            return self._broker.actors.get(actor_name) if self._broker is not None else None
        handler = locator.handler_named(actor_name)
        return self.actor_of(handler) if handler is not None else None

    def fanout_actor(self, queue_name: str) -> Any:
        """The fan-out actor of ``queue_name``, or None before the binding."""
        if self._broker is None:
            return None
        return self._broker.actors.get(FANOUT_PREFIX + queue_name)

    def target(self, cls: type, transport: str) -> Any:
        """The actor a dispatch of ``cls`` routed to ``transport`` is published to.

        The handler's own actor when ``cls`` has one handler, else the fan-out actor of the
        transport's queue. Raises NoHandlerForMessage, or MessengerError before the binding.
        """
        handlers = locator.handlers_for(cls)
        if len(handlers) == 1:
            actor = self.actor_of(handlers[0])
        else:
            actor = self.fanout_actor(self.transport_queue(transport))
        if actor is None:
            raise MessengerError(
                f"{handlers[0]!r} has no Dramatiq actor yet: is 'django_messenger' in INSTALLED_APPS "
                f"and did the app registry finish loading?"
            )
        return actor

    # -- declaring ----------------------------------------------------------------

    def declare(self, handler: Handler) -> None:
        """Declare ``handler``'s actor on the broker; refuse the handler when that is impossible."""
        broker = self._broker
        if broker is None or handler.error is not None:
            return
        with self._lock:
            existing = broker.actors.get(handler.actor_name)
            if existing is not None:
                if getattr(existing, "messenger_handler", None) is handler:
                    return
                error = HandlerError(
                    HandlerErrorCode.ACTOR_NAME_TAKEN,
                    f"the actor name {handler.actor_name!r} is already taken by another actor; "
                    f"pass actor_name= to @handler",
                )
                logger.error("Handler %s not declared: %s.", handler.fn, error)
                locator.refuse(handler, error)
                return
            try:
                _declare_handler_actor(handler, broker, self.queue_of(handler))
            except ValueError as exc:
                logger.error("Handler %s not declared: %s", handler.fn, exc)
                locator.refuse(handler, HandlerError(HandlerErrorCode.ACTOR_REFUSED, str(exc)))

    def declare_fanout_actors(self) -> None:
        """One fan-out actor on the queue of each Dramatiq transport."""
        broker = self._broker
        queues = {self.transport_queue(name) for name in messenger_settings.TRANSPORTS}
        for queue_name in sorted(queues):
            actor_name = FANOUT_PREFIX + queue_name
            if actor_name in broker.actors:
                continue
            options = _messenger_options(broker, {})
            dramatiq.actor(  # type: ignore[call-overload]
                fan_out, broker=broker, actor_name=actor_name, queue_name=queue_name, **options
            )


binding = Binding()


def _on_handler_registered(sender: Any, handler: Handler, **kwargs: Any) -> None:
    binding.declare(handler)


handler_registered.connect(_on_handler_registered, dispatch_uid="django_messenger.binding")


def _messenger_options(broker: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with messenger's retry defaults, and MessageDecodingFailed in ``throws``."""
    options = dict(options)
    if "max_retries" in broker.actor_options:
        for key, value in DEFAULT_ACTOR_OPTIONS.items():
            options.setdefault(key, value)
    if "throws" in broker.actor_options:
        throws = options.get("throws") or ()
        if isinstance(throws, type):
            throws = (throws,)
        options["throws"] = (MessageDecodingFailed, *tuple(throws))
    return options


def _check_size(payload: Any, message: Any) -> None:
    # Measuring means encoding the payload again: skipped when the body's size already tells.
    if needs_measuring(message):
        check_envelope_size(payload)


def _received(payload: Any) -> Envelope:
    message = CurrentMessage.get_current_message()
    _check_size(payload, message)
    if message is None:
        return decode_envelope(payload)
    received = ReceivedStamp(
        queue_name=message.queue_name,
        broker_message_id=message.message_id,
        retries=int(message.options.get("retries", 0)),
    )
    return decode_envelope(payload, stamps=(received,))


def _declare_handler_actor(handler: Handler, broker: Any, queue_name: str) -> Any:
    """Declare ``handler`` as an actor of ``broker`` on ``queue_name``, with messenger's defaults."""

    def run(payload: Any) -> None:
        # What the handler returns is for synchronous dispatches only: a worker drops it. An
        # idempotent handler's message that was already handled returns at once (acknowledged).
        envelope = _received(payload)
        if type(envelope.message) is not handler.message_type:
            raise MessageDecodingFailed(
                f"{handler.actor_name} handles {handler.message_type!r}, not {type(envelope.message)!r}."
            )
        if handler.idempotent is True:
            call(handler, envelope)  # once per message: its record and the handler in one transaction
        else:
            handler.call(envelope)  # nothing to record: no Outcome built for a result a worker drops

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
        **_messenger_options(broker, handler.options),
    )
    actor.messenger_handler = handler
    return actor


def fan_out(payload: Any) -> None:
    """Send ``payload`` on to the actor of every handler of its type (in the worker)."""
    _check_size(payload, CurrentMessage.get_current_message())
    envelope = decode_envelope(payload)  # validates the type and the body before anything is sent
    if not locator.has_handlers(type(envelope.message)):
        raise MessageDecodingFailed(f"No handler for {type(envelope.message)!r} in this worker.")
    for handler in locator.handlers_for(type(envelope.message)):
        actor = binding.actor_of(handler)
        if actor is None:
            continue
        publish(actor.broker, actor.message_with_options(args=(payload,)))
