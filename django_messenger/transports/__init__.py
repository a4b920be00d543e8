"""Transports: where a dispatched envelope goes (``sync``: handled here; Dramatiq: a queue).

:data:`router` holds the transports by name and by message type, built lazily from
``MESSENGER["TRANSPORTS"]`` and routing's rule (:mod:`django_messenger.routing`), cached,
and forgotten when the settings change. Inside :meth:`Router.replacing` every transport is
passed through a function first (how :mod:`django_messenger.testing` captures messages
instead of sending them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..conf import SYNC_TRANSPORT, messenger_settings, on_reload
from ..exceptions import MessengerError, UnknownTransport
from ..message_types import message_types
from ..routing import transport_name_for
from .base import Transport
from .dramatiq import DramatiqTransport
from .sync import SyncTransport

__all__ = ["DramatiqTransport", "Router", "SyncTransport", "Transport", "router"]


class Router:
    """Transports by name and by message type, built lazily and cached."""

    def __init__(self) -> None:
        self._by_type: dict[type, Transport] = {}
        self._by_name: dict[str, Transport] = {}
        self._replacements: list[Callable[[Transport], Transport]] = []
        #: Builds the transport of a name whose options say ``"outbox": True``. The outbox's
        #: transport writes a model, which this floor cannot import: the app's ``ready()`` sets it
        #: (:class:`django_messenger.outbox.OutboxTransport`).
        self.outbox_factory: Callable[[str], Transport] | None = None

    def transport_named(self, name: str) -> Transport:
        transport = self._by_name.get(name)
        if transport is None:
            if name == SYNC_TRANSPORT:
                transport = SyncTransport()
            elif name in messenger_settings.TRANSPORTS and messenger_settings.outbox(name):
                if self.outbox_factory is None:
                    raise MessengerError(
                        f"The transport {name!r} has an outbox, which needs the app registry: is "
                        f"'django_messenger' in INSTALLED_APPS and did the app registry finish loading?"
                    )
                transport = self.outbox_factory(name)
            elif name in messenger_settings.TRANSPORTS:
                transport = DramatiqTransport(name)
            else:
                raise UnknownTransport(
                    f"No transport named {name!r}: define it in MESSENGER['TRANSPORTS'] or route to "
                    f"'sync' (known: {sorted(messenger_settings.TRANSPORTS)})."
                )
            self._by_name[name] = transport
        return transport

    def transport_for(self, cls: type) -> Transport:
        transport = self._by_type.get(cls)
        if transport is None:
            transport = self.transport_named(transport_name_for(message_types.name_of(cls)))
            self._by_type[cls] = transport
        for replace in reversed(self._replacements):
            transport = replace(transport)
        return transport

    @contextmanager
    def replacing(self, replace: Callable[[Transport], Transport]) -> Iterator[None]:
        """Inside the block, :meth:`transport_for` answers ``replace(transport)`` (innermost first)."""
        self._replacements.append(replace)
        try:
            yield
        finally:
            self._replacements.remove(replace)

    def clear(self) -> None:
        self._by_type.clear()
        self._by_name.clear()


router = Router()
on_reload(router.clear)
