"""The handler registry: which message types exist, and which handlers each one has.

``@handler`` records a :class:`Handler` here; nothing touches Dramatiq until
:meth:`HandlerRegistry.bind` gives the registry a broker (the app's ``ready()`` does,
after django-dramatiq built the broker). From then on each handler is a Dramatiq
actor. A message type gets a stable *type name* — ``messenger_name`` on the class,
a model's ``app_label.ModelName``, or ``app_label.ClassName`` — which is what
travels on the wire and what routing keys on. Only types registered here resolve
when a message is read: nothing from the wire is imported by name.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from django.apps import apps
from django.db import models

from .exceptions import NoHandlerForMessage, UnknownMessageType

logger = logging.getLogger("django_messenger")

F = TypeVar("F", bound=Callable[..., Any])

#: Messenger's retry defaults, replacing Dramatiq's weeks-long ones.
DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {"max_retries": 3, "min_backoff": 1_000, "max_backoff": 300_000}

#: Options ``@handler`` reads itself; every other keyword goes to Dramatiq as an actor option.
_OWN_OPTIONS = {"actor_name", "queue_name", "priority"}


def type_name(cls: type) -> str:
    """The stable name of a message type (see the module docstring)."""
    explicit = cls.__dict__.get("messenger_name")
    if isinstance(explicit, str) and explicit:
        return explicit
    if isinstance(cls, type) and issubclass(cls, models.Model):
        return cls._meta.label
    app_config = apps.get_containing_app_config(cls.__module__)
    if app_config is not None:
        return f"{app_config.label}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclasses.dataclass(eq=False)
class Handler:
    """One ``@handler`` function and what Dramatiq needs to run it."""

    fn: Callable[..., Any]
    message_type: type | None
    actor_name: str
    wants_envelope: bool
    queue_name: str | None = None
    priority: int = 0
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Why this handler cannot be used (reported by the system checks), or None.
    error: str | None = None
    #: The Dramatiq actor, once the registry is bound to a broker.
    actor: Any = None

    @property
    def name(self) -> str:
        return self.actor_name

    def __repr__(self) -> str:
        return f"<Handler {self.actor_name}>"


class HandlerRegistry:
    """Handlers by message type, message types by name, actors by name."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.handlers: list[Handler] = []
        self._by_type: dict[type, tuple[Handler, ...]] = {}
        self._types: dict[str, type] = {}
        self._names: dict[type, str] = {}
        self._broker: Any = None
        self._bind_callbacks: list[Callable[[Any], None]] = []

    # -- registration -------------------------------------------------------------

    def register(self, handler: Handler) -> Handler:
        with self._lock:
            self.handlers.append(handler)
            if handler.message_type is not None and handler.error is None:
                self._by_type[handler.message_type] = (*self._by_type.get(handler.message_type, ()), handler)
                self.register_type(handler.message_type)
            if self._broker is not None:
                self._bind_handler(handler, self._broker)
        return handler

    def register_type(self, cls: type) -> str:
        """Make ``cls`` (and the classes its fields name) resolvable by type name."""
        with self._lock:
            if cls in self._names:
                return self._names[cls]
            name = type_name(cls)
            other = self._types.get(name)
            if other is not None and other is not cls:
                raise ValueError(
                    f"Two message types are named {name!r}: {other.__module__}.{other.__qualname__} and "
                    f"{cls.__module__}.{cls.__qualname__}. Set messenger_name on one of them."
                )
            self._types[name] = cls
            self._names[cls] = name
            for nested in _nested_types(cls):
                self.register_type(nested)
            return name

    def unregister(self, handler: Handler) -> None:
        """Forget ``handler`` (tests); its Dramatiq actor stays declared on the broker."""
        with self._lock:
            self.handlers.remove(handler)
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

    def name_of(self, cls: type) -> str:
        try:
            return self._names[cls]
        except KeyError:
            raise NoHandlerForMessage(
                f"{cls.__module__}.{cls.__qualname__} is not a registered message type: it has no handler."
            ) from None

    def resolve(self, name: str) -> type:
        """The registered type named ``name``; raises UnknownMessageType. Never imports."""
        try:
            return self._types[name]
        except (KeyError, TypeError):
            raise UnknownMessageType(f"Unknown message type {name!r}.") from None

    def handler_named(self, actor_name: str) -> Handler | None:
        for handler in self.handlers:
            if handler.actor_name == actor_name and handler.error is None:
                return handler
        return None

    def message_types(self) -> Iterator[type]:
        return iter(tuple(self._by_type))

    # -- Dramatiq ---------------------------------------------------------------

    @property
    def broker(self) -> Any:
        return self._broker

    def on_bind(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(broker)`` now if bound, and on every later bind."""
        self._bind_callbacks.append(callback)
        if self._broker is not None:
            callback(self._broker)

    def bind(self, broker: Any) -> None:
        """Declare every handler as an actor of ``broker`` (from the app's ready())."""
        with self._lock:
            self._broker = broker
            for handler in self.handlers:
                self._bind_handler(handler, broker)
            for callback in self._bind_callbacks:
                callback(broker)

    def _bind_handler(self, handler: Handler, broker: Any) -> None:
        self._declare(handler, broker)
        if handler.error is not None and handler.message_type in self._by_type:
            # A handler without an actor is never dispatched to; the system checks report it.
            rest = tuple(h for h in self._by_type[handler.message_type] if h is not handler)
            if rest:
                self._by_type[handler.message_type] = rest
            else:
                del self._by_type[handler.message_type]

    def _declare(self, handler: Handler, broker: Any) -> None:
        from .actors import declare_handler_actor

        if handler.error is not None:
            return
        existing = broker.actors.get(handler.actor_name)
        if existing is not None:
            if getattr(existing, "messenger_handler", None) is handler:
                handler.actor = existing
                return
            handler.error = (
                f"the actor name {handler.actor_name!r} is already taken by another actor; "
                f"pass actor_name= to @handler"
            )
            logger.error("Handler %s not declared: %s.", handler.fn, handler.error)
            return
        try:
            handler.actor = declare_handler_actor(handler, broker)
        except ValueError as exc:
            handler.error = str(exc)
            logger.error("Handler %s not declared: %s", handler.fn, exc)


registry = HandlerRegistry()


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
        error=error,
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
    retry defaults: 3 retries, backoff from 1 s to 5 min. A parameter named
    ``envelope`` receives the :class:`~django_messenger.Envelope`. The function is
    returned unchanged, so it can still be called directly.
    """

    def decorate(fn: F, message_type: type | None = None) -> F:
        registry.register(_make_handler(fn, message_type, options))
        return fn

    if target is not None and not isinstance(target, type) and callable(target):
        return decorate(target)
    return lambda fn: decorate(fn, target)


def _nested_types(cls: type) -> list[type]:
    """Dataclasses and models named by the fields of dataclass ``cls``."""
    if not dataclasses.is_dataclass(cls):
        return []
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        return []
    found: list[type] = []
    for field in dataclasses.fields(cls):
        _collect(hints.get(field.name), found)
    return found


def _collect(hint: Any, found: list[type]) -> None:
    if hint is None:
        return
    if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or issubclass(hint, models.Model)):
        found.append(hint)
        return
    origin = typing.get_origin(hint)
    if origin is not None or isinstance(hint, types.UnionType):
        for argument in typing.get_args(hint):
            _collect(argument, found)
