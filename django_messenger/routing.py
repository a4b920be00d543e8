"""Routing: which transport a message type goes to, resolved once a type.

``MESSENGER["ROUTING"]`` maps a type name (``"accounts.ResetPasswordRequest"``), an
app's types (``"accounts.*"``) or everything (``"*"``) to a transport name; a type
no key matches goes to ``MESSENGER["DEFAULT_TRANSPORT"]``. The answer is cached per
type and forgotten when the setting changes.
"""

from __future__ import annotations

from .conf import SYNC_TRANSPORT, messenger_settings, on_reload
from .exceptions import UnknownTransport
from .registry import registry
from .transports.base import Transport
from .transports.dramatiq import DramatiqTransport
from .transports.sync import SyncTransport


def transport_name_for(type_name: str) -> str:
    """The transport name that routing gives ``type_name``."""
    routing = messenger_settings.ROUTING
    if type_name in routing:
        return routing[type_name]
    app_label = type_name.split(".", 1)[0]
    for key in (f"{app_label}.*", "*"):
        if key in routing:
            return routing[key]
    return messenger_settings.DEFAULT_TRANSPORT


class Router:
    """Transports by name and by message type, built lazily and cached."""

    def __init__(self) -> None:
        self._by_type: dict[type, Transport] = {}
        self._by_name: dict[str, Transport] = {}

    def transport_named(self, name: str) -> Transport:
        transport = self._by_name.get(name)
        if transport is None:
            if name == SYNC_TRANSPORT:
                transport = SyncTransport()
            elif name in messenger_settings.TRANSPORTS:
                transport = DramatiqTransport(name, messenger_settings.queue_name(name))
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
            transport = self.transport_named(transport_name_for(registry.name_of(cls)))
            self._by_type[cls] = transport
        return transport

    def clear(self) -> None:
        self._by_type.clear()
        self._by_name.clear()


router = Router()
on_reload(router.clear)
