"""Stamps: small immutable values that travel with a message on its envelope.

After Symfony Messenger. A stamp says something *about* a message (delay it, it was
handled, it removes a resource...). Stamps whose ``sent`` is ``False`` live only in
the process that added them (for instance :class:`HandledStamp`, whose result need
not be JSON): the wire format drops them.

Each sent stamp has a short ``wire_name`` and converts itself to and from a JSON
object; only stamp classes registered here resolve when an envelope is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

S = TypeVar("S", bound="Stamp")

#: wire_name -> stamp class, for the stamps that travel.
STAMP_TYPES: dict[str, type[Stamp]] = {}


class Stamp:
    """Base class of stamps. Subclasses are frozen dataclasses."""

    #: The stamp's name on the wire; ``None`` for stamps that never leave the process.
    wire_name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("wire_name")
        if name is not None:
            if name in STAMP_TYPES and STAMP_TYPES[name] is not cls:
                raise ValueError(f"Two stamp classes use the wire name {name!r}.")
            STAMP_TYPES[name] = cls

    @classmethod
    def sent(cls) -> bool:
        return cls.wire_name is not None

    def to_wire(self) -> dict[str, Any]:
        """The stamp's fields as a JSON object (sent stamps override this)."""
        raise TypeError(f"{type(self).__name__} is never sent.")

    @classmethod
    def from_wire(cls: type[S], data: Mapping[str, Any]) -> S:
        raise TypeError(f"{cls.__name__} is never sent.")


@dataclass(frozen=True)
class DelayStamp(Stamp):
    """Deliver the message to its handlers no sooner than ``delay`` from now."""

    delay: timedelta
    wire_name: ClassVar[str | None] = "delay"

    @property
    def milliseconds(self) -> int:
        return max(0, int(self.delay.total_seconds() * 1000))

    def to_wire(self) -> dict[str, Any]:
        return {"ms": self.milliseconds}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> DelayStamp:
        return cls(timedelta(milliseconds=int(data["ms"])))


@dataclass(frozen=True)
class RemoveStamp(Stamp):
    """The message asks for its resource to be removed (an HTTP DELETE)."""

    wire_name: ClassVar[str | None] = "remove"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> RemoveStamp:
        return cls()


@dataclass(frozen=True)
class OperationStamp(Stamp):
    """What a write through a view asked for.

    ``operation`` is ``"create"``, ``"update"``, ``"partial_update"`` or ``"destroy"``;
    ``fields`` the names the request set plus those ``serializer.save(**extra)`` added
    (empty for a destroy); ``lookup`` the URL kwargs as strings (``{}`` on a create).
    """

    operation: str
    fields: tuple[str, ...] = ()
    lookup: Mapping[str, str] = field(default_factory=dict)
    wire_name: ClassVar[str | None] = "operation"

    def to_wire(self) -> dict[str, Any]:
        return {"operation": self.operation, "fields": list(self.fields), "lookup": dict(self.lookup)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> OperationStamp:
        return cls(
            operation=str(data["operation"]),
            fields=tuple(str(name) for name in data["fields"]),
            lookup={str(key): str(value) for key, value in data["lookup"].items()},
        )


@dataclass(frozen=True)
class UserStamp(Stamp):
    """The primary key (as a string) of the authenticated user who made the request.

    Added to writes through views when ``MESSENGER["USER_STAMP"]`` is ``True``.
    """

    user_id: str
    wire_name: ClassVar[str | None] = "user"

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.user_id}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> UserStamp:
        return cls(str(data["id"]))


@dataclass(frozen=True)
class TrackStamp(Stamp):
    """The message is tracked: workers record its outcome for its status resource.

    ``owner`` is the primary key (as a string) of the user who sent it, empty for an
    anonymous one; ``handlers`` how many handlers its type had when it was dispatched, so
    that a fan-out reads ``handled`` only once every one of them handled it.
    """

    owner: str
    handlers: int = 1
    wire_name: ClassVar[str | None] = "track"

    def to_wire(self) -> dict[str, Any]:
        return {"owner": self.owner, "handlers": self.handlers}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> TrackStamp:
        return cls(owner=str(data["owner"]), handlers=int(data["handlers"]))


@dataclass(frozen=True)
class HandledStamp(Stamp):
    """A handler ran in this process: its name and what it returned. Never sent."""

    result: Any
    handler_name: str


@dataclass(frozen=True)
class SentStamp(Stamp):
    """The broker accepted the message: the transport, queue and broker message id. Never sent."""

    transport: str
    queue_name: str
    broker_message_id: str


@dataclass(frozen=True)
class OutboxStamp(Stamp):
    """The message was written to the transactional outbox, to be published by a relay. Never sent.

    ``broker_message_id`` is the id the broker will know it by once the relay published it;
    ``outbox_id`` the row's id (``OutboxMessage.pk``).
    """

    transport: str
    queue_name: str
    broker_message_id: str
    outbox_id: int


@dataclass(frozen=True)
class ReceivedStamp(Stamp):
    """A worker received the message from the broker. Never sent.

    ``retries`` counts the earlier failed tries of this handler for this message.
    """

    queue_name: str
    broker_message_id: str
    retries: int = 0


__all__ = [
    "STAMP_TYPES",
    "DelayStamp",
    "HandledStamp",
    "OperationStamp",
    "OutboxStamp",
    "ReceivedStamp",
    "RemoveStamp",
    "SentStamp",
    "Stamp",
    "TrackStamp",
    "UserStamp",
]
