"""Transports: where a dispatched envelope goes (``sync``: handled here; Dramatiq: a queue)."""

from .base import Transport
from .dramatiq import DramatiqTransport
from .sync import SyncTransport

__all__ = ["DramatiqTransport", "SyncTransport", "Transport"]
