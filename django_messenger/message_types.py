"""The type table: message types by wire name, and wire names by type.

A message type gets a stable *type name* — ``messenger_name`` on the class, a model's
``app_label.ModelName``, or ``app_label.ClassName`` — which is what travels on the wire
and what routing keys on. A type is registered when a handler for it is declared, with
the dataclasses and models its fields name (they travel nested in its body). Only types
registered here resolve when a message is read: nothing from the wire is imported by name.

Pure data: no broker, no actors.
"""

from __future__ import annotations

import dataclasses
import threading
import types
import typing
from typing import Any

from django.apps import apps
from django.db import models

from .exceptions import NoHandlerForMessage, UnknownMessageType


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


class MessageTypes:
    """Registered message types by name, and their names by type."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._types: dict[str, type] = {}
        self._names: dict[type, str] = {}

    def register(self, cls: type) -> str:
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
                self.register(nested)
            return name

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

    def forget(self, name: str) -> None:
        """Forget the type named ``name`` (tests)."""
        with self._lock:
            cls = self._types.pop(name, None)
            if cls is not None:
                self._names.pop(cls, None)

    def names(self) -> frozenset[str]:
        return frozenset(self._types)


message_types = MessageTypes()


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
