"""Routing: which transport a message type goes to.

``MESSENGER["ROUTING"]`` maps a type name (``"accounts.ResetPasswordRequest"``), an
app's types (``"accounts.*"``) or everything (``"*"``) to a transport name; a type
no key matches goes to ``MESSENGER["DEFAULT_TRANSPORT"]``. The rule only: the
transports themselves, cached per type, are in :mod:`django_messenger.transports`.
"""

from __future__ import annotations

from .conf import messenger_settings


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
