"""django-messenger: DRF writes sent through a message bus to Dramatiq, answered 202 Accepted."""

from __future__ import annotations

from .bus import MessageBus, bus
from .envelope import Envelope
from .exceptions import (
    BrokerUnavailable,
    MessageDecodingFailed,
    MessengerError,
    NoHandlerForMessage,
    UnknownMessageType,
)
from .persisters import MessengerPersister
from .registry import handler
from .stamps import DelayStamp, HandledStamp, OperationStamp, RemoveStamp, SentStamp, Stamp

__version__ = "0.1.0.dev0"

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
