"""The app config: find every app's ``handlers.py`` and bind the handlers to the broker."""

from __future__ import annotations

from django.apps import AppConfig, apps
from django.utils.module_loading import autodiscover_modules


class MessengerConfig(AppConfig):
    name = "django_messenger"
    verbose_name = "Messenger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here: the worker side needs the models (failures.py), loaded only by now.
        import dramatiq
        from django_dramatiq.middleware import DbConnectionsMiddleware
        from dramatiq.middleware import CurrentMessage, Retries

        from . import checks  # noqa: F401  (registers the system checks)
        from .delays import DelayHopMiddleware
        from .middleware import MessengerMiddleware
        from .retries import RetryGuard
        from .transports.dramatiq.binding import binding

        # django-dramatiq built the broker in its AppConfig.__init__, before any ready().
        broker = dramatiq.get_broker()
        if not any(isinstance(middleware, CurrentMessage) for middleware in broker.middleware):
            broker.add_middleware(CurrentMessage())  # the ReceivedStamp reads the message from it
        if not any(isinstance(middleware, DbConnectionsMiddleware) for middleware in broker.middleware):
            broker.add_middleware(DbConnectionsMiddleware())  # fresh database connections for every message
        if not any(isinstance(middleware, MessengerMiddleware) for middleware in broker.middleware):
            broker.add_middleware(MessengerMiddleware())
        has_retries = any(isinstance(middleware, Retries) for middleware in broker.middleware)
        if has_retries and not any(isinstance(middleware, RetryGuard) for middleware in broker.middleware):
            # Before Retries in the list, so that its after-hooks run after Retries' own.
            broker.add_middleware(RetryGuard(), before=Retries)
        if not any(isinstance(middleware, DelayHopMiddleware) for middleware in broker.middleware):
            broker.add_middleware(DelayHopMiddleware())  # last: every other middleware saw the message
        binding.bind(broker)
        autodiscover_modules("handlers")
        if apps.is_installed("drf_spectacular"):
            # drf-spectacular's extensions register themselves on import: messenger views are
            # then documented as they behave (docs/openapi.md), with no code from the user.
            from . import openapi  # noqa: F401
