"""Queue and failure statistics: what ``messenger_stats`` prints and the admin dashboard shows.

Per queue: messages ready, in flight (fetched by a worker, not acknowledged yet) where the broker
tells, delayed (its ``.DQ``) and dead-lettered (its ``.XQ``); and, from the failure store, the
failures per handler.

Each broker has one *reader*, a module with ``read(broker, queues, *, timeout) -> list[QueueStats]``
(docs/operations.md). :data:`READERS` maps a Dramatiq broker class, by its dotted path, to its
reader's module; a subclass of a listed class uses its parent's reader. Adding a broker is one
more entry. The reader is imported only when the project's broker is of its class, so a reader
may import its broker's client library (redis-py, boto3, ...), which the broker already needed.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol, cast

from django.db.models import Count, Max, Min
from django.db.models.functions import TruncDate
from django.utils import timezone
from dramatiq.common import q_name

from ..conf import SYNC_TRANSPORT, messenger_settings
from ..exceptions import MessengerError
from ..locator import locator
from ..models import FailedMessage
from ..transports.dramatiq.binding import FANOUT_PREFIX, binding

__all__ = [
    "READERS",
    "HandlerFailures",
    "NoReader",
    "QueueStats",
    "Reader",
    "StatsUnavailable",
    "failures_over_time",
    "failures_per_handler",
    "messenger_queues",
    "queue_stats",
    "reader_for",
]

#: A Dramatiq broker class's dotted path -> the module of its reader (see the module's docs).
READERS: dict[str, str] = {
    "dramatiq.brokers.rabbitmq.RabbitmqBroker": "django_messenger.stats.rabbitmq",
    "dramatiq.brokers.redis.RedisBroker": "django_messenger.stats.redis",
    "dramatiq.brokers.stub.StubBroker": "django_messenger.stats.stub",
    "django_messenger.brokers.sqs.SQSBroker": "django_messenger.stats.sqs",
    "dramatiq_postgres.broker.PostgresBroker": "django_messenger.stats.postgres",
    "django_messenger.brokers.kafka.KafkaBroker": "django_messenger.stats.kafka",
    "django_messenger.brokers.pubsub.PubSubBroker": "django_messenger.stats.pubsub",
}


class StatsUnavailable(MessengerError):
    """The broker could not be asked (unreachable, refused, timed out).

    Its text names the broker and the kind of error, never a host, a port or a credential:
    it is shown in the admin and in a command's output.
    """


class NoReader(MessengerError):
    """The project's broker has no stats reader in :data:`READERS`."""


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """One queue's counts; ``None`` where the broker does not tell (see ``notes``)."""

    queue: str
    ready: int | None
    in_flight: int | None
    delayed: int | None
    dead_lettered: int | None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "notes": list(self.notes)}


@dataclasses.dataclass(frozen=True)
class HandlerFailures:
    """The failures of one handler in the failure store."""

    handler: str
    count: int
    first_failed_at: datetime
    last_failed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "handler": self.handler,
            "count": self.count,
            "first_failed_at": self.first_failed_at.isoformat(),
            "last_failed_at": self.last_failed_at.isoformat(),
        }


class Reader(Protocol):
    """What a reader module provides (docs/operations.md, "Adding a broker's reader")."""

    def read(self, broker: Any, queues: Sequence[str], *, timeout: float) -> list[QueueStats]:
        """One :class:`QueueStats` a queue, in order, within ``timeout`` s; or :class:`StatsUnavailable`."""
        ...


def broker_path(broker: Any) -> str:
    cls = type(broker)
    return f"{cls.__module__}.{cls.__qualname__}"


def reader_for(broker: Any) -> Reader:
    """The reader module of ``broker``'s class (or of the nearest listed parent class).

    Raises:
      NoReader: no class of ``broker``'s is in :data:`READERS`.
    """
    for cls in type(broker).__mro__:
        module = READERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if module is not None:
            return cast(Reader, importlib.import_module(module))
    raise NoReader(
        f"The broker {broker_path(broker)} has no stats reader: its queue counts cannot be shown "
        f"(django_messenger.stats.READERS lists the brokers that have one)."
    )


def messenger_queues(broker: Any = None) -> list[str]:
    """The queues messenger uses: every Dramatiq transport's (its fan-out actor's) and every handler's.

    Canonical names only: a queue's delay (``.DQ``) and dead-letter (``.XQ``) queues are its columns.
    """
    broker = binding.broker if broker is None else broker
    names = {
        binding.transport_queue(name) for name in messenger_settings.TRANSPORTS if name != SYNC_TRANSPORT
    }
    for handler in locator.handlers:
        actor = binding.actor_of(handler)
        if actor is not None:
            names.add(actor.queue_name)
    if broker is not None:
        for actor_name, actor in getattr(broker, "actors", {}).items():
            if actor_name.startswith(FANOUT_PREFIX):
                names.add(actor.queue_name)
    return sorted({q_name(name) for name in names})


def queue_stats(
    queues: Iterable[str] | None = None, *, broker: Any = None, timeout: float | None = None
) -> list[QueueStats]:
    """The counts of ``queues`` (messenger's own by default) on ``broker`` (messenger's by default).

    Raises:
      NoReader: the broker has no reader.
      StatsUnavailable: the broker could not be asked within ``timeout`` (``PUBLISH_TIMEOUT`` by default).
      MessengerError: messenger is not bound to a broker yet.
    """
    broker = binding.broker if broker is None else broker
    if broker is None:
        raise MessengerError("messenger is not bound to a broker: is 'django_messenger' in INSTALLED_APPS?")
    names: Sequence[str] = (
        sorted({q_name(name) for name in queues}) if queues is not None else messenger_queues(broker)
    )
    reader = reader_for(broker)
    seconds = messenger_settings.PUBLISH_TIMEOUT if timeout is None else timeout
    return reader.read(broker, names, timeout=seconds)


def failures_per_handler() -> list[HandlerFailures]:
    """The failure store's rows counted by handler, the handler with the most first."""
    rows = (
        FailedMessage.objects.values("handler")
        .annotate(count=Count("id"), first=Min("first_failed_at"), last=Max("last_failed_at"))
        .order_by("-count", "handler")
    )
    return [
        HandlerFailures(
            handler=row["handler"],
            count=row["count"],
            first_failed_at=row["first"],
            last_failed_at=row["last"],
        )
        for row in rows
    ]


def failures_over_time(
    days: int = 14, *, today: date | None = None
) -> tuple[list[date], dict[str, list[int]]]:
    """The failure store's rows per handler and per day (by ``last_failed_at``) over the last ``days`` days.

    Returns the days, oldest first (in the current time zone, ending ``today``), and per handler
    its counts on those days. A failure that was retried or removed is no longer counted.
    """
    today = timezone.localdate() if today is None else today
    first = today - timedelta(days=days - 1)
    window = [first + timedelta(days=offset) for offset in range(days)]
    start = timezone.make_aware(datetime.combine(first, datetime.min.time()))
    rows = (
        FailedMessage.objects.filter(last_failed_at__gte=start)
        .annotate(day=TruncDate("last_failed_at", tzinfo=timezone.get_current_timezone()))
        .values("handler", "day")
        .annotate(count=Count("id"))
    )
    index = {day: position for position, day in enumerate(window)}
    per_handler: dict[str, list[int]] = {}
    for row in rows:
        position = index.get(row["day"])
        if position is None:  # after today (a clock ahead of the database's): not shown
            continue
        per_handler.setdefault(row["handler"], [0] * days)[position] += row["count"]
    return window, dict(sorted(per_handler.items()))
