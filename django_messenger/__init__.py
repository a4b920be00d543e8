"""django-messenger: DRF writes sent through a message bus to Dramatiq, answered 202 Accepted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bus import MessageBus, bus
from .envelope import Envelope
from .exceptions import (
    BrokerUnavailable,
    MessageDecodingFailed,
    MessengerError,
    NoHandlerForMessage,
    UnknownMessageType,
)
from .locator import handler
from .stamps import DelayStamp, HandledStamp, OperationStamp, RemoveStamp, SentStamp, Stamp

if TYPE_CHECKING:
    from .persisters import MessengerPersister

__version__ = "0.1.0.dev0"


def __getattr__(name: str) -> Any:
    # MessengerPersister needs DRF's serializers, which workers never use: import it on demand.
    if name == "MessengerPersister":
        from .persisters import MessengerPersister

        return MessengerPersister
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BrokerUnavailable",
    "DelayStamp",
    "Envelope",
    "HandledStamp",
    "MessageBus",
    "MessageDecodingFailed",
    "MessengerError",
    "MessengerPersister",
    "NoHandlerForMessage",
    "OperationStamp",
    "RemoveStamp",
    "SentStamp",
    "Stamp",
    "UnknownMessageType",
    "bus",
    "handler",
]
