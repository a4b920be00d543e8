"""The handler locator: which handlers each message type has, and ``@handler``.

``@handler`` records a :class:`Handler` here and registers its message type in the type
table (:mod:`django_messenger.message_types`). The locator is pure data: no broker, no
actors. Binding handlers to Dramatiq actors is the Dramatiq transport's job
(:mod:`django_messenger.transports.dramatiq.binding`), run from the app's ``ready()``;
it hears of handlers declared later through the :data:`handler_registered` signal.
The sync transport and the workers' actors find handlers here: the receiving side.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
import typing
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from django.dispatch import Signal

from .envelope import Envelope
from .exceptions import HandlerError, HandlerErrorCode, NoHandlerForMessage
from .message_types import message_types

F = TypeVar("F", bound=Callable[..., Any])

#: Options ``@handler`` reads itself; every other keyword goes to Dramatiq as an actor option.
_OWN_OPTIONS = {"actor_name", "queue_name", "priority", "idempotent", "using"}

#: Sent with ``handler=`` each time a handler is registered (the Dramatiq binding declares its actor).
handler_registered = Signal()


@dataclasses.dataclass(eq=False)
class Handler:
    """One ``@handler`` function and the options it was declared with."""

    fn: Callable[..., Any]
    message_type: type | None
    actor_name: str
    wants_envelope: bool
    queue_name: str | None = None
    priority: int = 0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: ``@handler(idempotent=True)``: its writes and a record of each message it handled commit in
    #: one transaction, and a message already recorded is not handled again (django_messenger.once).
    idempotent: bool = False
    #: The database alias of that transaction and record (``using=``); None: Django's router decides.
    using: str | None = None
    #: Why this handler cannot be used (reported by the system checks), or None.
    error: HandlerError | None = None

    @property
    def name(self) -> str:
        return self.actor_name

    def call(self, envelope: Envelope) -> Any:
        """Run the handler on ``envelope``'s message (and the envelope when it asks); return its result."""
        if self.wants_envelope:
            return self.fn(envelope.message, envelope=envelope)
        return self.fn(envelope.message)

    def __repr__(self) -> str:
        return f"<Handler {self.actor_name}>"


class HandlerLocator:
    """Handlers by message type and by name."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.handlers: list[Handler] = []
        self._by_type: dict[type, tuple[Handler, ...]] = {}

    # -- registration -------------------------------------------------------------

    def register(self, handler: Handler) -> Handler:
        with self._lock:
            self.handlers.append(handler)
            if handler.message_type is not None and handler.error is None:
                self._by_type[handler.message_type] = (*self._by_type.get(handler.message_type, ()), handler)
                message_types.register(handler.message_type)
        handler_registered.send(sender=HandlerLocator, handler=handler)
        return handler

    def unregister(self, handler: Handler) -> None:
        """Forget ``handler`` (tests); its Dramatiq actor stays declared on the broker."""
        with self._lock:
            self.handlers.remove(handler)
            self._drop(handler)

    def refuse(self, handler: Handler, error: HandlerError) -> None:
        """Mark ``handler`` unusable (the system checks report ``error``); it is never dispatched to."""
        with self._lock:
            handler.error = error
            self._drop(handler)

    def _drop(self, handler: Handler) -> None:
        if handler.message_type in self._by_type:
            rest = tuple(h for h in self._by_type[handler.message_type] if h is not handler)
            if rest:
                self._by_type[handler.message_type] = rest
            else:
                del self._by_type[handler.message_type]

    # -- lookups ----------------------------------------------------------------

    def handlers_for(self, cls: type) -> tuple[Handler, ...]:
        """The handlers of ``cls``, in registration order; raises NoHandlerForMessage."""
        try:
            return self._by_type[cls]
        except KeyError:
            raise NoHandlerForMessage(
                f"No handler for message type {cls.__module__}.{cls.__qualname__}. Declare one with "
                f"@handler in an installed app's handlers.py."
            ) from None

    def has_handlers(self, cls: type) -> bool:
        return cls in self._by_type

    def handler_named(self, actor_name: str) -> Handler | None:
        for handler in self.handlers:
            if handler.actor_name == actor_name and handler.error is None:
                return handler
        return None

    def message_types(self) -> Iterator[type]:
        return iter(tuple(self._by_type))


locator = HandlerLocator()


def _first_parameter_type(fn: Callable[..., Any]) -> tuple[type | None, str | None]:
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as exc:
        return None, f"its signature cannot be read ({exc})"
    if not parameters:
        return None, "it takes no parameter; the first one receives the message"
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # NameError and friends from string annotations
        return None, f"its annotations cannot be resolved ({exc})"
    hint = hints.get(parameters[0].name)
    if hint is None:
        return None, (
            f"its first parameter {parameters[0].name!r} has no type annotation; annotate it "
            f"or name the type: @handler(MessageType)"
        )
    if not isinstance(hint, type):
        return None, f"the annotation {hint!r} of {parameters[0].name!r} is not a class"
    return hint, None


def _make_handler(fn: Callable[..., Any], message_type: type | None, options: dict[str, Any]) -> Handler:
    error = None
    if message_type is None:
        message_type, error = _first_parameter_type(fn)
    elif not isinstance(message_type, type):
        message_type, error = None, f"{message_type!r} is not a class"
    try:
        wants_envelope = "envelope" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        wants_envelope = False
    actor_options = {key: value for key, value in options.items() if key not in _OWN_OPTIONS}
    return Handler(
        fn=fn,
        message_type=message_type,
        actor_name=options.get("actor_name") or f"{fn.__module__}.{fn.__qualname__}",
        wants_envelope=wants_envelope,
        queue_name=options.get("queue_name"),
        priority=int(options.get("priority", 0)),
        options=actor_options,
        idempotent=options.get("idempotent", False),
        using=options.get("using"),
        error=HandlerError(HandlerErrorCode.NO_MESSAGE_TYPE, error) if error else None,
    )


@overload
def handler(fn: F, /) -> F: ...
@overload
def handler(message_type: type | None = None, /, **options: Any) -> Callable[[F], F]: ...


def handler(target: Any = None, /, **options: Any) -> Any:
    """Declare a message handler.

    ``@handler`` takes the message type from the first parameter's annotation;
    ``@handler(SomeType)`` names it. Keywords are Dramatiq actor options
    (``queue_name``, ``priority``, ``max_retries``, ``min_backoff``, ``max_backoff``,
    ``time_limit``, ``retry_when``, ``throws``, ``actor_name``...), with messenger's
    retry defaults: 3 retries, backoff from 1 s to 5 min. ``idempotent=True`` runs the
    handler at most once per message (its writes and a record of the message commit in one
    transaction of database ``using``, Django's router's choice by default). A parameter named
    ``envelope`` receives the :class:`~django_messenger.Envelope`. The function is
    returned unchanged, so it can still be called directly.
    """

    def decorate(fn: F, message_type: type | None = None) -> F:
        locator.register(_make_handler(fn, message_type, options))
        return fn

    if target is not None and not isinstance(target, type) and callable(target):
        return decorate(target)
    return lambda fn: decorate(fn, target)
