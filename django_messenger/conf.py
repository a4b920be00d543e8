"""The ``MESSENGER`` setting, read through a typed object with one property a key.

Every key is optional; :data:`DEFAULTS` holds the defaults. The object caches what it
read and forgets it when a test changes the setting (``setting_changed``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

#: The name of the built-in transport that handles a message in the dispatching process.
SYNC_TRANSPORT = "sync"

DEFAULTS: dict[str, Any] = {
    # The transport of message types that ROUTING does not name.
    "DEFAULT_TRANSPORT": "async",
    # Message type name (or "app_label.*", or "*") -> transport name.
    "ROUTING": {},
    # Transport name -> options. Every transport but "sync" sends to Dramatiq.
    "TRANSPORTS": {"async": {"queue_name": "default"}},
    # Seconds a send may wait for the broker (connect, publish, confirm) before it fails.
    "PUBLISH_TIMEOUT": 5.0,
    # A send counts once the broker confirmed it. False means at-most-once, knowingly.
    "CONFIRM_DELIVERY": True,
    # Seconds sent in the Retry-After header of a 503.
    "RETRY_AFTER": 5,
    # Largest encoded envelope, in bytes, a worker accepts from the wire.
    "MAX_MESSAGE_SIZE": 1024 * 1024,
    # Stamp each write's envelope with the id of the authenticated user (UserStamp).
    "USER_STAMP": False,
    # Seconds of the longest single delay handed to the broker: a longer delay travels in hops
    # (django_messenger.delays), under RabbitMQ's consumer_timeout (30 min) and SQS's 15 min.
    "DELAY_HOP": 600,
}


class MessengerSettings:
    """Typed access to ``settings.MESSENGER``."""

    @cached_property
    def _user(self) -> dict[str, Any]:
        value = getattr(settings, "MESSENGER", {}) or {}
        if not isinstance(value, dict):
            raise TypeError(f"settings.MESSENGER must be a dict, not {type(value).__name__}.")
        return value

    def _get(self, key: str) -> Any:
        return self._user.get(key, DEFAULTS[key])

    @property
    def DEFAULT_TRANSPORT(self) -> str:  # noqa: N802 - named like the setting key
        return str(self._get("DEFAULT_TRANSPORT"))

    @property
    def ROUTING(self) -> dict[str, str]:  # noqa: N802
        return dict(self._get("ROUTING"))

    @property
    def TRANSPORTS(self) -> dict[str, dict[str, Any]]:  # noqa: N802
        transports = {name: dict(options) for name, options in DEFAULTS["TRANSPORTS"].items()}
        for name, options in (self._user.get("TRANSPORTS") or {}).items():
            transports[name] = {**transports.get(name, {}), **(options or {})}
        return transports

    @property
    def PUBLISH_TIMEOUT(self) -> float:  # noqa: N802
        return float(self._get("PUBLISH_TIMEOUT"))

    @property
    def CONFIRM_DELIVERY(self) -> bool:  # noqa: N802
        return bool(self._get("CONFIRM_DELIVERY"))

    @property
    def RETRY_AFTER(self) -> int:  # noqa: N802
        return int(self._get("RETRY_AFTER"))

    @property
    def MAX_MESSAGE_SIZE(self) -> int:  # noqa: N802
        return int(self._get("MAX_MESSAGE_SIZE"))

    @property
    def USER_STAMP(self) -> bool:  # noqa: N802
        return bool(self._get("USER_STAMP"))

    @property
    def DELAY_HOP(self) -> float:  # noqa: N802
        return float(self._get("DELAY_HOP"))

    def queue_name(self, transport: str) -> str:
        """The Dramatiq queue of handlers routed to ``transport`` that name none."""
        options = self.TRANSPORTS.get(transport, {})
        return str(options.get("queue_name", "default"))

    def reload(self) -> None:
        self.__dict__.pop("_user", None)


messenger_settings = MessengerSettings()

_reload_callbacks: list[Any] = []


def on_reload(callback: Any) -> Any:
    """Register ``callback()`` to run whenever ``MESSENGER`` changes (tests)."""
    _reload_callbacks.append(callback)
    return callback


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "MESSENGER":
        messenger_settings.reload()
        for callback in _reload_callbacks:
            callback()


setting_changed.connect(_setting_changed)
