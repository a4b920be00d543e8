"""Django system checks; each id has a line in docs/checks.md."""

from __future__ import annotations

import dataclasses
import math
import sys
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import dramatiq
from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router
from django.urls import NoReverseMatch, URLPattern, URLResolver, get_resolver, reverse
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Retries

from .brokers.rabbitmq import CLASSIC, QUEUE_TYPES, QUORUM
from .conf import SYNC_TRANSPORT, MessengerSettings, messenger_settings
from .dramatiq_encoder import BoundedJSONEncoder
from .exceptions import HandlerErrorCode
from .locator import locator
from .once import database_of, record_model
from .transports.dramatiq.binding import binding


@checks.register("messenger")
def check_handlers(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E002 a handler without a usable message type; E003 two handlers with one actor name."""
    errors: list[checks.CheckMessage] = []
    by_name: dict[str, list[Any]] = defaultdict(list)
    for handler in locator.handlers:
        by_name[handler.actor_name].append(handler)
    for name, handlers in by_name.items():
        if len(handlers) > 1:
            where = ", ".join(f"{h.fn.__module__}.{h.fn.__qualname__}" for h in handlers)
            errors.append(
                checks.Error(
                    f"Two handlers have the actor name {name!r}: {where}.",
                    hint="Give one of them another name: @handler(actor_name='...').",
                    obj=name,
                    id="django_messenger.E003",
                )
            )
    for handler in locator.handlers:
        if handler.error is None or len(by_name[handler.actor_name]) > 1:
            continue
        where = f"{handler.fn.__module__}.{handler.fn.__qualname__}"
        code = handler.error.code
        if code is HandlerErrorCode.NO_MESSAGE_TYPE:
            errors.append(
                checks.Error(
                    f"The handler {where} has no message type: {handler.error}.",
                    hint="Annotate its first parameter with the message class or use @handler(MessageClass).",
                    obj=where,
                    id="django_messenger.E002",
                )
            )
        elif code is HandlerErrorCode.ACTOR_NAME_TAKEN:
            errors.append(
                checks.Error(
                    f"The handler {where} cannot be declared: {handler.error}.",
                    hint="Give it another name: @handler(actor_name='...').",
                    obj=where,
                    id="django_messenger.E003",
                )
            )
        else:
            errors.append(
                checks.Error(
                    f"The handler {where} cannot be declared as a Dramatiq actor: {handler.error}",
                    hint="Pass only actor options that the broker's middleware declares.",
                    obj=where,
                    id="django_messenger.E007",
                )
            )
    return errors


@checks.register("messenger")
def check_broker(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E004 a RabbitMQ broker without publisher confirms; E008 django_dramatiq missing; on Redis,
    W006; on PostgreSQL, E013 a database it cannot write on and W010 a send it does not bound."""
    errors: list[checks.CheckMessage] = []
    if not apps.is_installed("django_dramatiq"):
        errors.append(
            checks.Error(
                "'django_dramatiq' is not in INSTALLED_APPS: nothing builds the broker from DRAMATIQ_BROKER.",
                hint="Add 'django_dramatiq' to INSTALLED_APPS.",
                obj="INSTALLED_APPS",
                id="django_messenger.E008",
            )
        )
    broker = binding.broker
    if broker is None:
        return errors
    if (
        isinstance(broker, RabbitmqBroker)
        and not broker.confirm_delivery
        and messenger_settings.CONFIRM_DELIVERY
    ):
        errors.append(
            checks.Error(
                "The RabbitMQ broker does not confirm delivery: a 202 could answer a message that was lost.",
                hint=(
                    "Add 'confirm_delivery': True to DRAMATIQ_BROKER['OPTIONS'], or set "
                    "MESSENGER['CONFIRM_DELIVERY'] = False to accept at-most-once delivery."
                ),
                obj="DRAMATIQ_BROKER",
                id="django_messenger.E004",
            )
        )
    if isinstance(broker, RabbitmqBroker):
        errors.extend(_connection_warnings(broker))
    if _is_redis_broker(broker):
        errors.extend(_redis_timeout_warnings(broker))
    if _is_postgres_broker(broker):
        errors.extend(_postgres_errors(broker))
    return errors


def _is_postgres_broker(broker: Any) -> bool:
    """Whether ``broker`` is dramatiq-postgres' PostgresBroker (or messenger's), without importing it.

    dramatiq-postgres is an optional extra: a PostgresBroker exists only once its module was imported.
    """
    module = sys.modules.get("dramatiq_postgres.broker")
    postgres_broker = getattr(module, "PostgresBroker", None)
    return postgres_broker is not None and isinstance(broker, postgres_broker)


#: psycopg waits this long to connect when ``connect_timeout`` is not set (and at least 2 s when it is).
PSYCOPG_DEFAULT_CONNECT_TIMEOUT = 130
PSYCOPG_MIN_CONNECT_TIMEOUT = 2


def postgres_connect_bound(alias: str) -> float:
    """The longest psycopg may take to connect to Django's database ``alias``, in seconds."""
    options = connections.settings[alias].get("OPTIONS") or {}
    value = options.get("connect_timeout")
    try:
        seconds = int(float(value)) if value is not None else 0
    except (TypeError, ValueError):
        seconds = 0
    if seconds <= 0:
        return float(PSYCOPG_DEFAULT_CONNECT_TIMEOUT)
    return float(max(seconds, PSYCOPG_MIN_CONNECT_TIMEOUT))


def _postgres_errors(broker: Any) -> list[checks.CheckMessage]:
    """E013 a PostgreSQL broker that cannot write on its database; W010 a send it does not bound."""
    messages: list[checks.CheckMessage] = []
    if apps.is_installed("dramatiq_postgres.django"):
        messages.append(
            checks.Error(
                "'dramatiq_postgres.django' is in INSTALLED_APPS: it builds a broker of its own, beside "
                "the one django_dramatiq builds from DRAMATIQ_BROKER, which messenger is bound to.",
                hint=(
                    "Remove 'dramatiq_postgres.django' from INSTALLED_APPS and name "
                    "'django_messenger.brokers.postgres.PostgresBroker' in DRAMATIQ_BROKER['BROKER']; "
                    "create its tables with `dramatiq-postgres init` (see docs/transports.md)."
                ),
                obj="INSTALLED_APPS",
                id="django_messenger.E013",
            )
        )
    if not getattr(broker, "transactional", False):
        messages.append(
            checks.Warning(
                f"DRAMATIQ_BROKER names dramatiq-postgres' own {type(broker).__name__}: its enqueue "
                "retries up to 10 times with waits of up to 30 s (a write could hang far beyond "
                f"MESSENGER['PUBLISH_TIMEOUT'] before its 503), on a connection of its own (a message "
                "dispatched in a transaction is sent at the commit, not written with it).",
                hint=(
                    "Use 'django_messenger.brokers.postgres.PostgresBroker' (same options): one attempt "
                    "within PUBLISH_TIMEOUT, on the caller's Django connection."
                ),
                obj="DRAMATIQ_BROKER",
                id="django_messenger.W010",
            )
        )
        return messages
    alias = str(broker.database)
    if alias not in connections.settings:
        messages.append(
            checks.Error(
                f"The PostgreSQL broker writes on the database {alias!r}, which is not in DATABASES.",
                hint=(
                    "Set DRAMATIQ_BROKER['OPTIONS']['database'] to the alias of the database holding "
                    "its tables."
                ),
                obj="DRAMATIQ_BROKER",
                id="django_messenger.E013",
            )
        )
        return messages
    engine = str(connections.settings[alias].get("ENGINE", ""))
    if connections[alias].vendor != "postgresql":
        messages.append(
            checks.Error(
                f"The PostgreSQL broker writes on the database {alias!r}, whose ENGINE is {engine!r}: "
                "its messages are rows of a PostgreSQL table, written on that database's connection.",
                hint=(
                    "Point DRAMATIQ_BROKER['OPTIONS']['database'] at a PostgreSQL database "
                    "(django.db.backends.postgresql) that holds the broker's tables."
                ),
                obj="DRAMATIQ_BROKER",
                id="django_messenger.E013",
            )
        )
        return messages
    bound = postgres_connect_bound(alias)
    timeout = messenger_settings.PUBLISH_TIMEOUT
    if bound > timeout:
        messages.append(
            checks.Warning(
                f"Connecting to the database {alias!r} may take up to {bound:g} s (psycopg's "
                f"connect_timeout, 130 s when unset, 2 s at least), longer than "
                f"MESSENGER['PUBLISH_TIMEOUT'] ({timeout:g} s): a write could wait that long for a new "
                "connection before its 503.",
                hint=(
                    f"Set DATABASES[{alias!r}]['OPTIONS']['connect_timeout'] to at most PUBLISH_TIMEOUT "
                    "(whole seconds, 2 at least), and PUBLISH_TIMEOUT to 2 or more."
                ),
                obj="DATABASES",
                id="django_messenger.W010",
            )
        )
    return messages


def _is_redis_broker(broker: Any) -> bool:
    """Whether ``broker`` is Dramatiq's RedisBroker (or a subclass), without importing redis.

    Redis is an optional extra: a RedisBroker exists only once its module was imported.
    """
    module = sys.modules.get("dramatiq.brokers.redis")
    redis_broker = getattr(module, "RedisBroker", None)
    return redis_broker is not None and isinstance(broker, redis_broker)


def redis_send_bound(broker: Any) -> float | None:
    """The longest a send on a RedisBroker may wait, in seconds; None when nothing bounds it.

    A send may open a connection (``socket_connect_timeout``) and then wait for its answer
    (``socket_timeout``), once and once more per retry of the connection's ``retry``, with the
    retry's backoff (at most its cap) in between. Read from a connection object the broker's
    pool would make (never connected): redis-py takes these timeouts from the URL when the
    broker has one, and ignores them as keywords then; without a URL, redis-py 8 retries a
    failed command 10 times.
    """
    pool = broker.client.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)
    connect, read = connection.socket_connect_timeout, connection.socket_timeout
    if connect is None or read is None:
        return None
    retry = getattr(connection, "retry", None)
    retries = retry.get_retries() if retry is not None else 0
    backoff_cap = getattr(getattr(retry, "_backoff", None), "_cap", 0) or 0
    return float((connect + read) * (retries + 1) + backoff_cap * retries)


def _redis_timeout_warnings(broker: Any) -> list[checks.CheckMessage]:
    bound = redis_send_bound(broker)
    timeout = messenger_settings.PUBLISH_TIMEOUT
    if bound is not None and bound <= timeout:
        return []
    waits = "without end" if bound is None else f"up to {bound:g} s"
    return [
        checks.Warning(
            f"A send to the Redis broker may wait {waits} (socket_connect_timeout plus socket_timeout, "
            f"per try, and the retries' backoff), longer than MESSENGER['PUBLISH_TIMEOUT'] ({timeout:g} s): "
            "a write could hang that long before its 503.",
            hint=(
                "Put socket_connect_timeout and socket_timeout in the broker URL's query string, adding "
                "up to at most PUBLISH_TIMEOUT, e.g. redis://127.0.0.1:6379/0?socket_timeout=2"
                "&socket_connect_timeout=2 (redis-py ignores them as keyword options when there is a URL, "
                "and retries 10 times when there is none)."
            ),
            obj="DRAMATIQ_BROKER",
            id="django_messenger.W006",
        )
    ]


#: The Redis settings under which a 202 survives a Redis restart (every write in the AOF, fsynced)
#: and a full memory (a write refused, never a queued message evicted).
DURABLE_REDIS = {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}


def _durable(key: str, value: str | None) -> bool:
    """Whether Redis's ``key`` set to ``value`` keeps what a 202 accepted.

    Besides ``noeviction``, the ``volatile-*`` policies evict only keys with an expiry, and
    Dramatiq's Redis keys have none: at the limit such a Redis refuses writes as ``noeviction``
    does. The ``allkeys-*`` policies evict queued messages.
    """
    if key == "maxmemory-policy" and value is not None and value.startswith("volatile-"):
        return True
    return value == DURABLE_REDIS[key]


@checks.register("messenger", deploy=True)
def check_redis_durability(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W007 (``check --deploy`` only, it asks the server): a Redis that can lose what a 202 accepted."""
    broker = binding.broker
    if broker is None or not _is_redis_broker(broker):
        return []
    try:
        config = broker.client.config_get(*DURABLE_REDIS)
    except Exception as exc:  # CONFIG renamed or disabled (managed Redis), or the server unreachable
        found = f"its persistence settings could not be read ({type(exc).__name__})"
    else:
        found = ", ".join(f"{key} {config.get(key, '?')}" for key in DURABLE_REDIS)
        if all(_durable(key, config.get(key)) for key in DURABLE_REDIS):
            return []
    return [
        checks.Warning(
            f"The Redis broker may lose accepted messages: {found}. A 202 on Redis means the message is "
            "in Redis's memory; a Redis restart or crash loses it unless every write is appended to "
            "the AOF and fsynced, and a full Redis that evicts any key (an allkeys-* policy) can drop it.",
            hint=(
                "Run Redis with 'appendonly yes', 'appendfsync always' and 'maxmemory-policy noeviction' "
                "(or a volatile-* policy: Dramatiq's keys have no expiry, so it never evicts them), "
                "or accept that a 202 can be lost (see docs/transports.md). Managed Redis: check its "
                "persistence and eviction settings."
            ),
            obj="DRAMATIQ_BROKER",
            id="django_messenger.W007",
        )
    ]


def _connection_warnings(broker: Any) -> list[checks.CheckMessage]:
    parameters = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
    warnings: list[checks.CheckMessage] = []
    if any(getattr(p, "heartbeat", None) == 0 for p in parameters):
        warnings.append(
            checks.Warning(
                "The RabbitMQ broker has heartbeats turned off (heartbeat=0): a dead connection is only "
                "noticed when it is next used, and RabbitMQ keeps a dead worker's messages unacknowledged.",
                hint="Add heartbeat=30 to the broker URL's query string (or to DRAMATIQ_BROKER['OPTIONS']).",
                obj="DRAMATIQ_BROKER",
                id="django_messenger.W001",
            )
        )
    if any(getattr(p, "blocked_connection_timeout", None) is None for p in parameters):
        warnings.append(
            checks.Warning(
                "The RabbitMQ broker has no blocked_connection_timeout: while a resource alarm blocks "
                "publishers, a worker's sends (retries, fan-out) wait without end. Web requests are bounded "
                "by MESSENGER['PUBLISH_TIMEOUT'] regardless.",
                hint="Add blocked_connection_timeout=10 to the broker URL's query string.",
                obj="DRAMATIQ_BROKER",
                id="django_messenger.W002",
            )
        )
    return warnings


@checks.register("messenger")
def check_routing(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E005 routing to a transport that does not exist; E009 the removed PUBLISHER key."""
    known = {SYNC_TRANSPORT, *messenger_settings.TRANSPORTS}
    errors: list[checks.CheckMessage] = []
    if "PUBLISHER" in (getattr(settings, "MESSENGER", None) or {}):
        errors.append(
            checks.Error(
                "MESSENGER['PUBLISHER'] is no longer a setting: every RabbitMQ send uses a connection "
                "per thread (the pipelined publisher was removed).",
                hint="Remove the 'PUBLISHER' key from MESSENGER.",
                obj="MESSENGER",
                id="django_messenger.E009",
            )
        )
    named = [("DEFAULT_TRANSPORT", messenger_settings.DEFAULT_TRANSPORT)]
    named += [(f"ROUTING[{key!r}]", value) for key, value in messenger_settings.ROUTING.items()]
    for where, transport in named:
        if transport not in known:
            errors.append(
                checks.Error(
                    f"MESSENGER[{where!r}] names the transport {transport!r}, which is not defined.",
                    hint=f"Use one of {sorted(known)} or add it to MESSENGER['TRANSPORTS'].",
                    obj="MESSENGER",
                    id="django_messenger.E005",
                )
            )
    return errors


#: The options a transport of ``MESSENGER["TRANSPORTS"]`` understands today.
TRANSPORT_OPTIONS = frozenset({"queue_name", "queue_type", "outbox"})


@checks.register("messenger")
def check_unknown_settings(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W008: MESSENGER keys, or transport options, that django-messenger does not read.

    A misspelt key (or an option of a later release) would otherwise be ignored silently.
    """
    given = getattr(settings, "MESSENGER", None) or {}
    if not isinstance(given, dict):
        return []  # reported when the settings are read (ImproperlyConfigured)
    known = {field.name for field in dataclasses.fields(MessengerSettings)} | {"PUBLISHER"}  # E009
    where = [f"MESSENGER[{key!r}]" for key in given if key not in known]
    transports = given.get("TRANSPORTS")
    if isinstance(transports, dict):
        for name, options in transports.items():
            if isinstance(options, dict):
                where += [
                    f"MESSENGER['TRANSPORTS'][{name!r}][{option!r}]"
                    for option in options
                    if option not in TRANSPORT_OPTIONS
                ]
    return [
        checks.Warning(
            f"{place} is not a setting of this version of django-messenger: it is ignored.",
            hint="Check its spelling against the Settings page of the docs, or remove it.",
            obj="MESSENGER",
            id="django_messenger.W008",
        )
        for place in where
    ]


@checks.register("messenger")
def check_queue_types(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E014 a queue_type that cannot be had; W011 classic queues on a RabbitMQ cluster."""
    transports = [name for name in messenger_settings.TRANSPORTS if name != SYNC_TRANSPORT]
    types = {name: messenger_settings.queue_type(name) for name in transports}
    errors: list[checks.CheckMessage] = []
    for name, value in types.items():
        if value not in QUEUE_TYPES:
            errors.append(
                _queue_type_error(
                    f"MESSENGER['TRANSPORTS'][{name!r}]['queue_type'] is {value!r}.",
                    f"Use {' or '.join(map(repr, QUEUE_TYPES))} ('classic' is the default).",
                )
            )
    if errors:
        return errors
    broker = binding.broker
    quorum = sorted(name for name, value in types.items() if value == QUORUM)
    if broker is None:
        return errors
    if quorum and not isinstance(broker, RabbitmqBroker):
        errors.append(
            _queue_type_error(
                f"MESSENGER['TRANSPORTS'][{quorum[0]!r}]['queue_type'] is 'quorum', but the broker is "
                f"{type(broker).__module__}.{type(broker).__qualname__}: quorum queues are RabbitMQ's.",
                "Remove queue_type (or set it to 'classic'), or use "
                "dramatiq.brokers.rabbitmq.RabbitmqBroker.",
            )
        )
        return errors
    if not isinstance(broker, RabbitmqBroker):
        return errors
    if quorum and broker.max_priority:
        errors.append(
            _queue_type_error(
                f"MESSENGER['TRANSPORTS'][{quorum[0]!r}]['queue_type'] is 'quorum', and the RabbitMQ broker "
                f"has max_priority={broker.max_priority}: quorum queues take no priorities (RabbitMQ refuses "
                f"to declare them with x-max-priority).",
                "Remove max_priority from DRAMATIQ_BROKER['OPTIONS'] (Dramatiq's actor priority, which "
                "orders a worker's own messages, still works), or use classic queues.",
            )
        )
    errors.extend(_mixed_queue_errors(types))
    parameters = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
    hosts = {(p.host, p.port) for p in parameters}
    classic = sorted(name for name, value in types.items() if value == CLASSIC)
    if len(hosts) > 1 and classic:
        errors.append(
            checks.Warning(
                f"The RabbitMQ broker lists {len(hosts)} hosts (a cluster), but the queues of "
                f"{', '.join(map(repr, classic))} are classic queues: a classic queue lives on one node, "
                f"and while that node is down its messages cannot be read, nor new ones sent to it "
                f"(a lost node loses them).",
                hint=(
                    "Set MESSENGER['TRANSPORTS'][name]['queue_type'] = 'quorum' (replicated on the cluster's "
                    "nodes; an existing classic queue must be moved first: docs/transports.md)."
                ),
                obj="MESSENGER",
                id="django_messenger.W011",
            )
        )
    return errors


def _queue_type_error(message: str, hint: str) -> checks.CheckMessage:
    return checks.Error(message, hint=hint, obj="MESSENGER", id="django_messenger.E014")


def _mixed_queue_errors(types: dict[str, str]) -> list[checks.CheckMessage]:
    """E014: one queue that transports of different queue types send to (a handler's own queue_name)."""
    errors: list[checks.CheckMessage] = []
    queues = {binding.transport_queue(name) for name in types}
    queues |= {
        binding.queue_of(h) for h in locator.handlers if h.error is None and h.message_type is not None
    }
    for queue in sorted(queues):
        claims = {name: types.get(name, CLASSIC) for name in binding.queue_transports(queue)}
        if len(set(claims.values())) > 1:
            which = ", ".join(f"{name!r} ({value})" for name, value in sorted(claims.items()))
            errors.append(
                _queue_type_error(
                    f"The queue {queue!r} gets the messages of transports of different queue types: {which}; "
                    f"it is declared as a quorum queue.",
                    "Give these transports one queue_type, or the handlers that name this queue_name "
                    "another queue.",
                )
            )
    return errors


def _url_views(patterns: list[Any]) -> Iterator[type]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _url_views(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            cls = getattr(pattern.callback, "cls", None)
            if isinstance(cls, type):
                yield cls


def _write_serializer_class(view: type) -> Any:
    """The serializer class that validates ``view``'s writes, as the view picks it."""
    if getattr(view, "messenger", True) == "input":
        return getattr(view, "input_serializer_class", None)
    return getattr(view, "serializer_class", None)


@checks.register("messenger", checks.Tags.urls)
def check_views(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E001 a view whose message type has no handler; E006 a view that cannot tell its type;
    E011 a serializer whose fields do not fit the message class's signature."""
    # Here, not at import: workers never need DRF's views nor the views' persister.
    from .mixins import MessengerViewMixin
    from .persisters import dispatched_type

    errors: list[checks.CheckMessage] = []
    seen: set[type] = set()
    for view in _url_views(get_resolver().url_patterns):
        if view in seen or not issubclass(view, MessengerViewMixin):
            continue
        seen.add(view)
        where = f"{view.__module__}.{view.__qualname__}"
        message_type = dispatched_type(view, _write_serializer_class(view))
        if message_type is None:
            errors.append(
                checks.Error(
                    f"{where} cannot tell what it dispatches.",
                    hint="Set message_class, or use a ModelSerializer (input_serializer_class for 'input').",
                    obj=view,
                    id="django_messenger.E006",
                )
            )
        elif not locator.has_handlers(message_type):
            errors.append(
                checks.Error(
                    f"{where} dispatches {message_type.__module__}.{message_type.__qualname__}, "
                    f"which has no handler.",
                    hint="Declare one with @handler in an installed app's handlers.py.",
                    obj=view,
                    id="django_messenger.E001",
                )
            )
        errors.extend(_signature_errors(view, where))
    return errors


#: Django cache backends that a web process does not share with the others.
UNSHARED_CACHES = frozenset(
    {"django.core.cache.backends.locmem.LocMemCache", "django.core.cache.backends.dummy.DummyCache"}
)


@checks.register("messenger", checks.Tags.urls)
def check_async_http(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E015 tracked writes whose status resource has no URL; W015 an idempotency cache not shared."""
    # Here, not at import: workers never need DRF's views.
    from .mixins import STATUS_URL_NAME, MessengerViewMixin

    errors: list[checks.CheckMessage] = []
    views = [view for view in _url_views(get_resolver().url_patterns) if issubclass(view, MessengerViewMixin)]
    tracked = [
        view
        for view in views
        if view.messenger_track or (view.messenger_track is None and messenger_settings.STATUS)
    ]
    if tracked:
        try:
            reverse(STATUS_URL_NAME, kwargs={"message_id": "00000000-0000-0000-0000-000000000000"})
        except NoReverseMatch:
            where = (
                "MESSENGER['STATUS']"
                if messenger_settings.STATUS
                else f"{tracked[0].__module__}.{tracked[0].__qualname__}"
            )
            errors.append(
                checks.Error(
                    f"{where} tracks writes, but the status resource has no URL: "
                    f"their Location cannot be built.",
                    hint='Add path("<prefix>/", include("django_messenger.urls")) to your ROOT_URLCONF.',
                    obj=where,
                    id="django_messenger.E015",
                )
            )
    alias = messenger_settings.IDEMPOTENCY_CACHE
    if alias is not None:
        backend = str(getattr(settings, "CACHES", {}).get(alias, {}).get("BACKEND", ""))
        if alias not in getattr(settings, "CACHES", {}) or backend in UNSHARED_CACHES:
            what = (
                f"the {backend.rsplit('.', 1)[-1]}, which no other process shares" if backend else "no cache"
            )
            errors.append(
                checks.Warning(
                    f"MESSENGER['IDEMPOTENCY_CACHE'] is {alias!r}, {what}: two web processes would each "
                    f"dispatch a request retried with one Idempotency-Key.",
                    hint="Name a cache every web process shares (Redis, Memcached, the database cache), "
                    "or remove IDEMPOTENCY_CACHE to keep the keys in the database.",
                    obj="MESSENGER",
                    id="django_messenger.W015",
                )
            )
    return errors


@checks.register("messenger")
def check_encoder(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W005: Dramatiq parses a message of any size before the worker's size check."""
    if not messenger_settings.MAX_MESSAGE_SIZE or isinstance(dramatiq.get_encoder(), BoundedJSONEncoder):
        return []
    return [
        checks.Warning(
            "Dramatiq's encoder parses a message of any size before MESSENGER['MAX_MESSAGE_SIZE'] is "
            "checked: a huge message on the queue costs a worker its parsing.",
            hint="Set DRAMATIQ_ENCODER = 'django_messenger.dramatiq_encoder.BoundedJSONEncoder'.",
            obj="DRAMATIQ_ENCODER",
            id="django_messenger.W005",
        )
    ]


#: RabbitMQ's default ``consumer_timeout``: a consumer holding a message longer loses its channel.
RABBITMQ_CONSUMER_TIMEOUT = 30 * 60


@checks.register("messenger")
def check_delays(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E010 a DELAY_HOP that is not a positive number; on RabbitMQ, W003 a handler whose
    ``max_backoff`` is longer than the hop and W004 a hop as long as the consumer timeout."""
    try:
        hop = messenger_settings.DELAY_HOP
    except ImproperlyConfigured:  # not a number at all
        hop = math.nan
    if not (math.isfinite(hop) and hop > 0):
        given = (getattr(settings, "MESSENGER", None) or {}).get("DELAY_HOP")
        return [
            checks.Error(
                f"MESSENGER['DELAY_HOP'] is {given!r}.",
                hint="Set it to a finite number of seconds greater than 0 (600 by default).",
                obj="MESSENGER",
                id="django_messenger.E010",
            )
        ]
    broker = binding.broker
    if not isinstance(broker, RabbitmqBroker):
        return []
    warnings: list[checks.CheckMessage] = []
    if hop >= RABBITMQ_CONSUMER_TIMEOUT:
        warnings.append(
            checks.Warning(
                f"MESSENGER['DELAY_HOP'] is {hop:g} s: RabbitMQ closes the channel of a worker that holds a "
                f"delayed message longer than its consumer_timeout (30 min by default) and redelivers it.",
                hint="Keep DELAY_HOP well under RabbitMQ's consumer_timeout (the default, 600, is 10 min).",
                obj="MESSENGER",
                id="django_messenger.W004",
            )
        )
    if not any(isinstance(middleware, Retries) for middleware in broker.middleware):
        return warnings
    for handler in locator.handlers:
        actor = binding.actor_of(handler)
        max_backoff = actor.options.get("max_backoff") if actor is not None else None
        if isinstance(max_backoff, int | float) and max_backoff > hop * 1000:
            where = f"{handler.fn.__module__}.{handler.fn.__qualname__}"
            warnings.append(
                checks.Warning(
                    f"The handler {where} has max_backoff={max_backoff:g} ms, longer than "
                    f"MESSENGER['DELAY_HOP'] ({hop:g} s): Dramatiq's retries are not sent in hops, "
                    f"and RabbitMQ redelivers a retry that a worker holds longer than its consumer_timeout.",
                    hint=(
                        f"Set max_backoff to at most {int(hop * 1000)} ms, "
                        f"or raise DELAY_HOP (keeping it under 30 min)."
                    ),
                    obj=where,
                    id="django_messenger.W003",
                )
            )
    return warnings


def _built_message_class(view: type) -> tuple[type, Any] | None:
    """``(message_class, serializer_class)`` when the view builds ``message_class(**validated_data)``."""
    from .persisters import dispatched_type, model_of  # here, not at import: as in check_views

    serializer_class = _write_serializer_class(view)
    cls = dispatched_type(view, serializer_class)
    if cls is None or cls is model_of(serializer_class) or not isinstance(serializer_class, type):
        return None  # nothing to build, or the model instance is dispatched
    return cls, serializer_class


def _signature_errors(view: type, where: str) -> list[checks.CheckMessage]:
    """E011: serializer fields a request may leave out (or that the class does not take)."""
    # Here, not at import: workers never need DRF's fields nor the views' persister.
    from rest_framework.fields import empty

    from .persisters import message_signature, missing_parameters, unexpected_parameters

    built = _built_message_class(view)
    if built is None:
        return []
    message_class, serializer_class = built
    signature = message_signature(message_class)
    try:
        fields = serializer_class().fields
    except Exception:  # a serializer that needs arguments to be built: nothing to compare
        return []
    if signature is None:
        return []
    # validated_data is keyed by each field's source (its first attribute), not by its name
    writable = {
        field.source_attrs[0]: name
        for name, field in fields.items()
        if not field.read_only and field.source_attrs
    }
    optional = [
        source
        for source, name in writable.items()
        if not fields[name].required and fields[name].default is empty
    ]
    needed = set(missing_parameters(signature, ()))
    problems = [
        f"the serializer field {writable[source]!r} may be left out, but {message_class.__qualname__}() "
        f"needs {source!r}"
        for source in optional
        if source in needed
    ]
    problems += [
        f"the serializer field {writable[source]!r} is not a parameter of {message_class.__qualname__}()"
        for source in unexpected_parameters(signature, writable)
    ]
    return [
        checks.Error(
            f"{where}: {problem}: such a request would be refused with a 400.",
            hint=(
                "Make the serializer field required=True or give it a default, or give the message's "
                "parameter a default; a field the message does not take should be read_only or removed."
            ),
            obj=view,
            id="django_messenger.E011",
        )
        for problem in problems
    ]


def _is_sqs_broker(broker: Any) -> bool:
    """Whether ``broker`` is dramatiq-sqs's SQSBroker (or messenger's subclass), without importing it.

    SQS is an optional extra: an SQSBroker exists only once dramatiq-sqs was imported.
    """
    module = sys.modules.get("dramatiq_sqs.broker")
    sqs_broker = getattr(module, "SQSBroker", None)
    return sqs_broker is not None and isinstance(broker, sqs_broker)


@checks.register("messenger")
def check_sqs(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """On an SQS broker: E012 a delay hop or a handler's ``max_backoff`` over SQS's 15 minutes;
    W009 a MAX_MESSAGE_SIZE whose messages SQS cannot take."""
    broker = binding.broker
    if broker is None or not _is_sqs_broker(broker):
        return []
    # Here, not at import: dramatiq-sqs and boto3 are an optional extra, loaded only with this broker.
    from .brokers.sqs import MAX_DELAY_SECONDS, delay_seconds, largest_envelope

    found: list[checks.CheckMessage] = []
    try:
        hop = messenger_settings.DELAY_HOP
    except ImproperlyConfigured:
        hop = math.nan  # E010
    if math.isfinite(hop) and delay_seconds(int(math.ceil(hop * 1000))) > MAX_DELAY_SECONDS:
        found.append(
            checks.Error(
                f"MESSENGER['DELAY_HOP'] is {hop:g} s: SQS delays a message by at most "
                f"{MAX_DELAY_SECONDS} s, so a longer delay would be refused instead of sent in hops.",
                hint=f"Set DELAY_HOP to at most {MAX_DELAY_SECONDS} (the default, 600, is 10 min).",
                obj="MESSENGER",
                id="django_messenger.E012",
            )
        )
    retries = next((m for m in broker.middleware if isinstance(m, Retries)), None)
    if retries is not None:
        for handler in locator.handlers:
            actor = binding.actor_of(handler)
            if actor is None:
                continue
            max_backoff = actor.options.get("max_backoff", retries.max_backoff)
            if (
                isinstance(max_backoff, int | float)
                and delay_seconds(math.ceil(max_backoff)) > MAX_DELAY_SECONDS
            ):
                where = f"{handler.fn.__module__}.{handler.fn.__qualname__}"
                found.append(
                    checks.Error(
                        f"The handler {where} has max_backoff={max_backoff:g} ms: SQS refuses a delay "
                        f"over {MAX_DELAY_SECONDS} s, so a retry that waits longer cannot be sent "
                        "(it is dead-lettered, or lost without messenger's RetryGuard).",
                        hint=f"Set max_backoff to at most {MAX_DELAY_SECONDS * 1000} ms.",
                        obj=where,
                        id="django_messenger.E012",
                    )
                )
    limit = messenger_settings.MAX_MESSAGE_SIZE
    sqs_limit = getattr(broker, "max_message_size", None)
    if isinstance(sqs_limit, int):
        largest = largest_envelope(sqs_limit)
        if not limit or limit > largest:
            given = f"{limit} bytes" if limit else "0 (no limit)"
            found.append(
                checks.Warning(
                    f"MESSENGER['MAX_MESSAGE_SIZE'] is {given}, but the SQS broker takes messages of at most "
                    f"{sqs_limit} bytes as base64: an envelope over about {largest} bytes is refused "
                    "by the broker's own limit when it is sent.",
                    hint=(
                        f"Set MAX_MESSAGE_SIZE to at most {largest}, so that the limit a client is told is "
                        "the one that holds (django_messenger.brokers.sqs.SQSBroker answers 413 either way)."
                    ),
                    obj="MESSENGER",
                    id="django_messenger.W009",
                )
            )
    return found


def _is_kafka_broker(broker: Any) -> bool:
    """Whether ``broker`` is messenger's KafkaBroker, without importing confluent-kafka.

    Kafka is an optional extra: a KafkaBroker exists only once its module was imported.
    """
    module = sys.modules.get("django_messenger.brokers.kafka")
    kafka_broker = getattr(module, "KafkaBroker", None)
    return kafka_broker is not None and isinstance(broker, kafka_broker)


#: The room a Dramatiq message takes around its envelope on Kafka (dramatiq_encoder.OPTIONS_ALLOWANCE).
KAFKA_MESSAGE_ALLOWANCE = 64 * 1024


#: librdkafka's spellings of an ``auto.offset.reset`` that does not start a new group at the oldest message.
KAFKA_RESET_TO_END = frozenset({"latest", "largest", "end", "error"})


def _librdkafka_true(value: Any) -> bool:
    return str(value).strip().lower() in {"true", "1", "t", "yes", "y"}


@checks.register("messenger")
def check_kafka(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """On a Kafka broker: E018 a producer or consumer configuration that loses the at-least-once
    guarantee; W012 a MAX_MESSAGE_SIZE whose messages the broker's max_message_size refuses;
    W018 topics created with fewer than 2 replicas."""
    broker = binding.broker
    if broker is None or not _is_kafka_broker(broker):
        return []
    found: list[checks.CheckMessage] = []
    producer = broker.producer_config
    unsafe = []
    if str(producer.get("acks", "all")).strip().lower() not in {"all", "-1"}:
        unsafe.append(f"acks={producer.get('acks')!r} (a 202 once the leader alone has it)")
    if not _librdkafka_true(producer.get("enable.idempotence", False)):
        unsafe.append(
            f"enable.idempotence={producer.get('enable.idempotence')!r} "
            "(a retried send may be stored twice, or out of order)"
        )
    if unsafe and messenger_settings.CONFIRM_DELIVERY:
        found.append(
            checks.Error(
                "The Kafka broker's producer_config overrides " + " and ".join(unsafe) + ".",
                hint=(
                    "Remove 'acks' and 'enable.idempotence' from "
                    "DRAMATIQ_BROKER['OPTIONS']['producer_config'] (the broker sets acks=all and "
                    "enable.idempotence=true), or set "
                    "MESSENGER['CONFIRM_DELIVERY'] = False to accept weaker delivery."
                ),
                obj="DRAMATIQ_BROKER",
                id="django_messenger.E018",
            )
        )
    consumer = broker.consumer_config
    auto = [
        key
        for key in ("enable.auto.commit", "enable.auto.offset.store")
        if _librdkafka_true(consumer.get(key, False))
    ]
    if auto:
        found.append(
            checks.Error(
                f"The Kafka broker's consumer_config turns on {', '.join(auto)}: offsets would be committed "
                "before their messages are handled, and a worker that stops loses them (at-most-once).",
                hint=(
                    "Remove them from DRAMATIQ_BROKER['OPTIONS']['consumer_config']: "
                    "the broker commits what is done."
                ),
                obj="DRAMATIQ_BROKER",
                id="django_messenger.E018",
            )
        )
    reset = str(consumer.get("auto.offset.reset", "earliest")).strip().lower()
    if reset in KAFKA_RESET_TO_END:
        found.append(
            checks.Error(
                "The Kafka broker's consumer_config sets "
                f"auto.offset.reset={consumer.get('auto.offset.reset')!r}: "
                "a new consumer group would skip every message sent before its first worker joined "
                "(answered 202, never handled).",
                hint=(
                    "Remove 'auto.offset.reset' from DRAMATIQ_BROKER['OPTIONS']['consumer_config']: "
                    "the broker sets 'earliest'."
                ),
                obj="DRAMATIQ_BROKER",
                id="django_messenger.E018",
            )
        )
    replicas = getattr(broker, "replication_factor", None)
    if getattr(broker, "create_topics", True) and isinstance(replicas, int) and 0 < replicas < 2:
        found.append(
            checks.Warning(
                f"The Kafka broker creates its topics with replication_factor={replicas}: Kafka acknowledges "
                "a message from one broker's page cache, so losing that broker's host or disk loses "
                "messages that were answered 202.",
                hint=(
                    "Remove 'replication_factor' from DRAMATIQ_BROKER['OPTIONS'] (the cluster's "
                    "default.replication.factor) or set it to 3, with topic_config "
                    "{'min.insync.replicas': '2'}; on a one-broker development server, add "
                    "'django_messenger.W018' to SILENCED_SYSTEM_CHECKS."
                ),
                obj="DRAMATIQ_BROKER",
                id="django_messenger.W018",
            )
        )
    limit = messenger_settings.MAX_MESSAGE_SIZE
    kafka_limit = getattr(broker, "max_message_size", None)
    if isinstance(kafka_limit, int):
        largest = max(0, kafka_limit - KAFKA_MESSAGE_ALLOWANCE)
        if not limit or limit > largest:
            given = f"{limit} bytes" if limit else "0 (no limit)"
            found.append(
                checks.Warning(
                    f"MESSENGER['MAX_MESSAGE_SIZE'] is {given}, but the Kafka broker sends messages "
                    f"of at most {kafka_limit} bytes (max_message_size): an envelope over about "
                    f"{largest} bytes is "
                    "refused by the broker's own limit when it is sent.",
                    hint=(
                        f"Set MAX_MESSAGE_SIZE to at most {largest}, or raise the broker's max_message_size "
                        "(and the topics' max.message.bytes) so that the limit a client is told is the one "
                        "that holds (the broker answers 413 either way)."
                    ),
                    obj="MESSENGER",
                    id="django_messenger.W012",
                )
            )
    return found


def _is_pubsub_broker(broker: Any) -> bool:
    """Whether ``broker`` is messenger's PubSubBroker, without importing google-cloud-pubsub.

    Pub/Sub is an optional extra: a PubSubBroker exists only once its module was imported.
    """
    module = sys.modules.get("django_messenger.brokers.pubsub")
    pubsub_broker = getattr(module, "PubSubBroker", None)
    return pubsub_broker is not None and isinstance(broker, pubsub_broker)


@checks.register("messenger")
def check_pubsub(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """On a Pub/Sub broker: E019 a project id Google Cloud would refuse; W013 a send bound
    (the broker's ``publish_timeout``) longer than ``PUBLISH_TIMEOUT``."""
    broker = binding.broker
    if broker is None or not _is_pubsub_broker(broker):
        return []
    # Here, not at import: google-cloud-pubsub is an optional extra, loaded only with this broker.
    from .brokers.pubsub import PROJECT_ID

    found: list[checks.CheckMessage] = []
    project_id = broker.project_id
    if not isinstance(project_id, str) or not PROJECT_ID.fullmatch(project_id):
        found.append(
            checks.Error(
                f"The Pub/Sub broker's project_id is {project_id!r}: no topic can be named without a "
                "Google Cloud project id.",
                hint=(
                    "Set DRAMATIQ_BROKER['OPTIONS']['project_id'] to your project's id (6 to 30 lowercase "
                    "letters, digits and hyphens, starting with a letter; or a legacy domain-scoped id, "
                    "'example.com:my-project')."
                ),
                obj="DRAMATIQ_BROKER",
                id="django_messenger.E019",
            )
        )
    own = broker.publish_timeout_option
    timeout = messenger_settings.PUBLISH_TIMEOUT
    if own is not None and own > timeout:
        found.append(
            checks.Warning(
                f"The Pub/Sub broker's publish_timeout is {own:g} s, longer than "
                f"MESSENGER['PUBLISH_TIMEOUT'] ({timeout:g} s): a write may wait that long before its 503.",
                hint="Remove publish_timeout from DRAMATIQ_BROKER['OPTIONS'] (the broker then uses "
                "PUBLISH_TIMEOUT), or set it to at most PUBLISH_TIMEOUT.",
                obj="DRAMATIQ_BROKER",
                id="django_messenger.W013",
            )
        )
    return found


@checks.register("messenger")
def check_management_url(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """W014: a RABBITMQ_MANAGEMENT_URL that messenger_stats and the dashboard cannot use."""
    url = messenger_settings.RABBITMQ_MANAGEMENT_URL
    if url is None:
        return []
    problem = None
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        problem = "is not an http(s) URL with a host"
    elif binding.broker is not None and not isinstance(binding.broker, RabbitmqBroker):
        problem = "is set, but the broker is not RabbitMQ: it is not read"
    if problem is None:
        return []
    return [
        checks.Warning(
            f"MESSENGER['RABBITMQ_MANAGEMENT_URL'] {problem}.",
            hint=(
                "Set it to the RabbitMQ management API's base URL (http://127.0.0.1:15672 when the "
                "rabbitmq_management plugin is on), or remove it: queue counts are then read over AMQP."
            ),
            obj="MESSENGER",
            id="django_messenger.W014",
        )
    ]


#: The shortest ``HANDLED_TTL`` that check W016 accepts while idempotent handlers exist: 1 day.
SHORTEST_HANDLED_TTL = 24 * 3600.0


def _idempotency_problem(handler: Any) -> str | None:
    """Why ``handler``'s ``idempotent=`` / ``using=`` cannot give exactly-once effects, or None."""
    if not isinstance(handler.idempotent, bool):
        return f"idempotent={handler.idempotent!r} is not True or False"
    if handler.using is not None and not handler.idempotent:
        return (
            f"using={handler.using!r} names the database of an idempotent handler's records, "
            f"but it is not idempotent"
        )
    if not handler.idempotent:
        return None
    model = record_model()  # HandledMessage: checks.py is importable before the app registry is ready
    longest = getattr(model._meta.get_field("handler"), "max_length", None)
    if longest is not None and len(handler.actor_name) > longest:
        return f"its actor name is longer than the {longest} characters a record holds"
    alias = database_of(handler)
    if alias not in settings.DATABASES:
        return f"its records would go to the database {alias!r}, which is not in settings.DATABASES"
    if not router.allow_migrate_model(alias, model):
        return f"the database routers never migrate django_messenger.HandledMessage to the database {alias!r}"
    if settings.DATABASES[alias].get("AUTOCOMMIT", True) is False:
        return f"the database {alias!r} has AUTOCOMMIT off, so the handler's transaction would never commit"
    return None


@checks.register("messenger")
def check_idempotent_handlers(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E016 an idempotent handler whose records cannot be kept; W016 a HANDLED_TTL under a day."""
    messages: list[checks.CheckMessage] = []
    idempotent = False
    for handler in locator.handlers:
        if handler.error is not None:
            continue
        idempotent = idempotent or handler.idempotent is True
        problem = _idempotency_problem(handler)
        if problem is not None:
            where = f"{handler.fn.__module__}.{handler.fn.__qualname__}"
            messages.append(
                checks.Error(
                    f"The handler {where} cannot have exactly-once effects: {problem}.",
                    hint=(
                        "Pass idempotent=True (or False), and using= only with it, naming a database of "
                        "settings.DATABASES to which django_messenger's migrations apply, with AUTOCOMMIT on."
                    ),
                    obj=where,
                    id="django_messenger.E016",
                )
            )
    ttl = messenger_settings.HANDLED_TTL
    if idempotent and ttl < SHORTEST_HANDLED_TTL:
        messages.append(
            checks.Warning(
                f"MESSENGER['HANDLED_TTL'] is {ttl:g} s: a message redelivered after its record was pruned "
                f"runs its idempotent handler again, and a broker redelivers what a dead worker held "
                f"whenever a worker next reads the queue.",
                hint=(
                    "Keep HANDLED_TTL longer than any outage of your workers: a day at least "
                    "(7 days by default)."
                ),
                obj="MESSENGER",
                id="django_messenger.W016",
            )
        )
    return messages


@checks.register("messenger")
def check_outbox(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E017 an ``outbox`` option that is not True or False; W017 an outbox that adds a copy (a
    broker that is the database) or that several relays may send twice from (no row locks)."""
    found: list[checks.CheckMessage] = []
    with_outbox: list[str] = []
    for name, options in messenger_settings.TRANSPORTS.items():
        value = options.get("outbox", False)
        if not isinstance(value, bool):
            found.append(
                checks.Error(
                    f"MESSENGER['TRANSPORTS'][{name!r}]['outbox'] is {value!r}, not True or False: the "
                    f"transport publishes directly.",
                    hint="Set it to True (write dispatches to the outbox table) or False.",
                    obj="MESSENGER",
                    id="django_messenger.E017",
                )
            )
        elif value:
            with_outbox.append(name)
    if not with_outbox:
        return found
    broker = binding.broker
    if broker is not None and getattr(broker, "transactional", False):
        found.append(
            checks.Warning(
                f"The transports {with_outbox} have an outbox, but the broker writes its messages in the "
                f"caller's transaction already (its queue table is an outbox): the outbox only adds a copy "
                f"and a relay's delay.",
                hint="Remove 'outbox' from these transports (docs/transports.md, PostgreSQL).",
                obj="MESSENGER",
                id="django_messenger.W017",
            )
        )
    # Imported here: the outbox's model needs the app registry, and this module must import without it.
    from .outbox import outbox_alias

    alias = outbox_alias()
    locks = connections[alias].features.has_select_for_update_skip_locked
    if messenger_settings.OUTBOX_RELAY_IN_WORKERS and not locks:
        found.append(
            checks.Warning(
                f"The outbox's database {alias!r} ({connections[alias].vendor}) cannot lock rows with SKIP "
                f"LOCKED, and every rundramatiq worker process runs a relay: two relays may publish one "
                f"message twice.",
                hint="Set MESSENGER['OUTBOX_RELAY_IN_WORKERS'] = False and run one "
                "`manage.py messenger_relay`, or keep the outbox on PostgreSQL.",
                obj="MESSENGER",
                id="django_messenger.W017",
            )
        )
    return found
