"""Calling a handler with a message (and its envelope when it asks for one)."""

from __future__ import annotations

from typing import Any

from .envelope import Envelope
from .registry import Handler


def call_handler(handler: Handler, envelope: Envelope) -> Any:
    """Run ``handler`` on ``envelope``'s message; return what it returned."""
    if handler.wants_envelope:
        return handler.fn(envelope.message, envelope=envelope)
    return handler.fn(envelope.message)
