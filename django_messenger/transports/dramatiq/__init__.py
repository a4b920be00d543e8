"""The Dramatiq transport (any Dramatiq broker) and the binding of handlers to actors."""

from .transport import DramatiqTransport

__all__ = ["DramatiqTransport"]
