"""The ``MESSENGER`` setting, read as one frozen dataclass.

Every key is optional. :class:`MessengerSettings` holds each key as a typed field with its
default; :meth:`MessengerSettings.from_setting` coerces a user's values to those types (the one
place that does). :data:`messenger_settings` builds the object from
``settings.MESSENGER`` when first read and again after a test changes the setting
(``setting_changed``), as DRF's ``api_settings`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

#: The name of the built-in transport that handles a message in the dispatching process.
SYNC_TRANSPORT = "sync"

C = TypeVar("C", bound=Callable[[], Any])


def _mapping(value: Any) -> Mapping[str, Any]:
    """A read-only copy of ``value`` (None is empty)."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise TypeError(f"a dict, not {type(value).__name__}")
    return MappingProxyType(dict(value))


def _transports(value: Any) -> Mapping[str, Mapping[str, Any]]:
    """The default ``async`` transport, with the user's transports merged in (options by options)."""
    merged = {name: dict(options) for name, options in _DEFAULT_TRANSPORTS.items()}
    for name, options in _mapping(value).items():
        merged[name] = {**merged.get(name, {}), **_mapping(options)}
    return MappingProxyType({name: MappingProxyType(options) for name, options in merged.items()})


def _bool(value: Any) -> bool:
    """``True``/``False`` (or 1/0): a string such as ``"false"`` is an error, not true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"True or False, not {value!r}")


def _positive(value: Any) -> float:
    """A finite number of seconds greater than 0."""
    number = float(value)
    if not (number > 0 and number != float("inf")):
        raise ValueError(f"a finite number of seconds greater than 0, not {value!r}")
    return number


def _optional_url(value: Any) -> str | None:
    """None, or a non-empty string."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"None or a URL, not {value!r}")
    return value


def _count(value: Any) -> int:
    """A whole number greater than 0 (``True`` is not one)."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"a whole number greater than 0, not {value!r}")
    return int(value)


def _non_negative(value: Any) -> float:
    """A finite number of seconds, 0 or more."""
    number = float(value)
    if not (number >= 0 and number != float("inf")):
        raise ValueError(f"a finite number of seconds, 0 or more, not {value!r}")
    return number


def _idempotency(value: Any) -> str:
    """``"optional"``, ``"required"``, or ``""`` (off) from False/None; True means ``"optional"``."""
    if value is None or value is False:
        return ""
    if value is True:
        return "optional"
    if value in IDEMPOTENCY_MODES:
        return str(value)
    raise ValueError(f"one of {', '.join(repr(mode) for mode in IDEMPOTENCY_MODES)}, True or False")


def _optional_str(value: Any) -> str | None:
    """A name, or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"a non-empty string or None, not {value!r}")
    return value


def _setting(default: Any, coerce: Callable[[Any], Any]) -> Any:
    """A field of :class:`MessengerSettings`: its default, and how a user's value becomes its type."""
    return dataclasses.field(default_factory=lambda: coerce(default), metadata={"coerce": coerce})


#: The values of ``MESSENGER["IDEMPOTENCY"]`` and a view's ``messenger_idempotency`` that turn it on.
IDEMPOTENCY_MODES = ("optional", "required")

_DEFAULT_TRANSPORTS: Mapping[str, Mapping[str, Any]] = {"async": {"queue_name": "default"}}


@dataclasses.dataclass(frozen=True)
class MessengerSettings:
    """The ``MESSENGER`` keys, typed, with their defaults (docs/settings.md describes each)."""

    #: The transport of message types that ROUTING does not name.
    DEFAULT_TRANSPORT: str = _setting("async", str)
    #: Message type name (or "app_label.*", or "*") -> transport name.
    ROUTING: Mapping[str, str] = _setting({}, _mapping)
    #: Transport name -> options. Every transport but "sync" sends to Dramatiq.
    TRANSPORTS: Mapping[str, Mapping[str, Any]] = _setting(None, _transports)
    #: Seconds a send may wait for the broker (connect, publish, confirm) before it fails.
    PUBLISH_TIMEOUT: float = _setting(5.0, _positive)
    #: A send counts once the broker confirmed it. False means at-most-once, knowingly.
    CONFIRM_DELIVERY: bool = _setting(True, _bool)
    #: Seconds sent in the Retry-After header of a 503.
    RETRY_AFTER: int = _setting(5, int)
    #: Largest encoded envelope, in bytes, a worker accepts from the wire.
    MAX_MESSAGE_SIZE: int = _setting(1024 * 1024, int)
    #: Stamp each write's envelope with the id of the authenticated user (UserStamp).
    USER_STAMP: bool = _setting(False, _bool)
    #: Seconds of the longest single delay handed to the broker: a longer delay travels in hops
    #: (django_messenger.delays), under RabbitMQ's consumer_timeout (30 min) and SQS's 15 min.
    DELAY_HOP: float = _setting(600.0, float)
    #: The RabbitMQ management API (``http://127.0.0.1:15672``) messenger_stats and the admin dashboard
    #: read in-flight counts from; None reads ready counts over AMQP only (docs/operations.md).
    RABBITMQ_MANAGEMENT_URL: str | None = _setting(None, _optional_url)
    #: Seconds an idempotent handler's record of a message is kept (``messenger_handled prune``):
    #: a redelivery later than this runs the handler again.
    HANDLED_TTL: float = _setting(7 * 24 * 3600.0, _positive)
    #: Every messenger write is tracked: its 202 carries a ``Location`` of its status resource.
    STATUS: bool = _setting(False, _bool)
    #: Seconds a status record (and a status ``Location``) lives; ``messenger_prune`` deletes older ones.
    STATUS_TTL: float = _setting(7 * 24 * 3600.0, _positive)
    #: ``Idempotency-Key`` on every messenger write: ``""`` (off), ``"optional"`` or ``"required"``.
    IDEMPOTENCY: str = _setting(None, _idempotency)
    #: Seconds a key replays its first answer.
    IDEMPOTENCY_TTL: float = _setting(24 * 3600.0, _positive)
    #: Seconds after which a request still "in flight" under a key counts as crashed: its key is taken over.
    IDEMPOTENCY_LOCK_TIMEOUT: float = _setting(60.0, _positive)
    #: The alias of a Django cache (shared by every web process) that keeps the keys; None: the database.
    IDEMPOTENCY_CACHE: str | None = _setting(None, _optional_str)

    #: Seconds a relay of the transactional outbox waits between looks at the outbox table when
    #: it found nothing to publish (django_messenger.outbox).
    OUTBOX_POLL_INTERVAL: float = _setting(0.5, _positive)
    #: Rows a relay locks and publishes in one transaction.
    OUTBOX_BATCH_SIZE: int = _setting(100, _count)
    #: Seconds a published outbox row is kept (marked sent) before the relay deletes it; 0 deletes it
    #: as it is marked.
    OUTBOX_KEEP_SENT: float = _setting(3600.0, _non_negative)
    #: Run a relay thread in every ``rundramatiq`` worker process when a transport has an outbox.
    OUTBOX_RELAY_IN_WORKERS: bool = _setting(True, _bool)

    @classmethod
    def from_setting(cls, value: Any) -> MessengerSettings:
        """The settings ``value`` (``settings.MESSENGER``) gives, every key coerced to its type.

        Raises:
          ImproperlyConfigured: ``value`` is not a dict, or a key's value cannot be read as its type.
        """
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured(f"settings.MESSENGER must be a dict, not {type(value).__name__}.")
        given: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name not in value:
                continue
            try:
                given[field.name] = field.metadata["coerce"](value[field.name])
            except (TypeError, ValueError) as exc:
                raise ImproperlyConfigured(
                    f"MESSENGER[{field.name!r}] is {value[field.name]!r}, which cannot be read as "
                    f"{field.type} ({exc}): see the Settings page of django-messenger's docs."
                ) from None
        return cls(**given)

    def outbox(self, transport: str) -> bool:
        """Whether dispatches to ``transport`` are written to the transactional outbox (a bool; E017 else)."""
        return self.TRANSPORTS.get(transport, {}).get("outbox", False) is True

    def queue_name(self, transport: str) -> str:
        """The Dramatiq queue of handlers routed to ``transport`` that name none."""
        return str(self.TRANSPORTS.get(transport, {}).get("queue_name", "default"))

    def queue_type(self, transport: str) -> Any:
        """The ``queue_type`` of ``transport``'s queues: ``"classic"`` (the default) or ``"quorum"``.

        Returned as given; system check E014 names any other value.
        """
        return self.TRANSPORTS.get(transport, {}).get("queue_type", "classic")


#: Every key's default, read-only.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {field.name: getattr(MessengerSettings(), field.name) for field in dataclasses.fields(MessengerSettings)}
)


class _LazySettings:
    """``settings.MESSENGER`` as :class:`MessengerSettings`, built when first read and after each change."""

    def __init__(self) -> None:
        self._settings: MessengerSettings | None = None

    @property
    def current(self) -> MessengerSettings:
        built = self._settings
        if built is None:
            built = self._settings = MessengerSettings.from_setting(getattr(settings, "MESSENGER", None))
        return built

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)

    def reload(self) -> None:
        self._settings = None


#: The settings every module reads (``messenger_settings.ROUTING``); typed as :class:`MessengerSettings`.
messenger_settings: MessengerSettings = cast(MessengerSettings, _LazySettings())

_reload_callbacks: list[Callable[[], Any]] = []


def on_reload(callback: C) -> C:
    """Register ``callback()`` to run whenever ``MESSENGER`` changes (tests)."""
    _reload_callbacks.append(callback)
    return callback


def reload() -> None:
    """Forget the settings read so far and run the ``on_reload`` callbacks."""
    cast(_LazySettings, messenger_settings).reload()
    for callback in _reload_callbacks:
        callback()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "MESSENGER":
        reload()


setting_changed.connect(_setting_changed)
