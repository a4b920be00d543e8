"""The app config: find every app's ``handlers.py``, bind the handlers to the broker, set up the outbox."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.utils.module_loading import autodiscover_modules


class MessengerConfig(AppConfig):
    name = "django_messenger"
    verbose_name = "Messenger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here: the worker side needs the models (failures.py), loaded only by now.
        import dramatiq

        from . import checks  # noqa: F401  (registers the system checks)
        from .brokers.guard import guard_consumers
        from .dramatiq_encoder import check_fields_when_decoding
        from .outbox import install
        from .transports.dramatiq.binding import binding

        # django-dramatiq built the broker in its AppConfig.__init__, before any ready().
        broker = dramatiq.get_broker()
        add_middleware(broker)
        # A forged message is dead-lettered, not the end of a worker thread: its fields are
        # checked while decoding (any encoder), its queue by each consumer
        check_fields_when_decoding()
        guard_consumers(broker)
        install()  # transports with "outbox": True write to the outbox table
        binding.bind(broker)
        autodiscover_modules("handlers")
        if apps.is_installed("drf_spectacular"):
            # drf-spectacular's extensions register themselves on import: messenger views are
            # then documented as they behave (docs/openapi.md), with no code from the user.
            from . import openapi  # noqa: F401


def add_middleware(broker: Any) -> None:
    """Put the middleware messenger's workers need on ``broker``, each where it must run, once.

    What the broker already lists (from ``DRAMATIQ_BROKER["MIDDLEWARE"]``) is kept where it is.
    """
    # Imported here: the worker side needs the models (failures.py), loaded only by ready().
    from django_dramatiq.middleware import DbConnectionsMiddleware
    from dramatiq.middleware import CurrentMessage, Retries

    from .delays import DelayHopMiddleware
    from .middleware import MessengerMiddleware
    from .outbox import RelayMiddleware, has_outbox
    from .retries import RetryGuard

    def has(kind: type) -> bool:
        return any(isinstance(middleware, kind) for middleware in broker.middleware)

    if not has(CurrentMessage):
        broker.add_middleware(CurrentMessage())  # the ReceivedStamp reads the message from it
    if not has(DbConnectionsMiddleware):
        broker.add_middleware(DbConnectionsMiddleware())  # fresh database connections for every message
    if not has(MessengerMiddleware):
        broker.add_middleware(MessengerMiddleware())
    if has(Retries) and not has(RetryGuard):
        # Before Retries in the list, so that its after-hooks run after Retries' own.
        broker.add_middleware(RetryGuard(), before=Retries)
    if has_outbox() and not has(RelayMiddleware):
        # The outbox's relay thread in each worker process. Only with an outbox: Dramatiq calls
        # every hook of every middleware for each message, a no-op one included.
        broker.add_middleware(RelayMiddleware())
    if not has(DelayHopMiddleware):
        broker.add_middleware(DelayHopMiddleware())  # last: every other middleware saw the message
