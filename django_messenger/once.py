"""Exactly-once effects: ``@handler(idempotent=True)``.

An idempotent handler runs inside a database transaction that first records
``(message_id, handler)`` as a :class:`~django_messenger.models.HandledMessage` and then
calls the handler. Its writes and the record commit together, or neither does:

* the handler raises: the transaction rolls back, nothing is recorded, and Dramatiq
  retries the message as usual (a retry, or a ``messenger_failed retry``, runs it again);
* the transaction commits and the worker dies before acknowledging the message: the
  redelivered message finds the record and is acknowledged without running the handler;
* two deliveries of one message at once (a broker that redelivers a message still being
  handled): the second one's insert waits on the first one's uncommitted row, then finds it
  committed (skipped) or rolled back (it runs).

Fan-out keeps one record per handler (the key holds the handler's actor name). A handler
that is not idempotent is called as it always was: no transaction, no query.

The model is found through the app registry (:func:`record_model`), as
``get_user_model()`` finds the user model: the transports that call :func:`call` are
imported by the package's ``__init__``, before any model can be.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db import IntegrityError, models, router, transaction
from django.utils import timezone

from .conf import messenger_settings
from .envelope import Envelope
from .locator import Handler, locator

logger = logging.getLogger("django_messenger")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What :func:`call` did: ``ran`` False when the message was already handled (no result)."""

    ran: bool
    result: Any = None


def record_model() -> type[models.Model]:
    """:class:`~django_messenger.models.HandledMessage`, from the app registry."""
    return apps.get_model("django_messenger", "HandledMessage")


def database_of(handler: Handler) -> str:
    """The database alias of ``handler``'s transaction and records: its ``using=``, else the router's."""
    if handler.using is not None:
        return handler.using
    return str(router.db_for_write(record_model()))


def call(handler: Handler, envelope: Envelope) -> Outcome:
    """Call ``handler`` on ``envelope``, once per message when it is idempotent.

    Raises what the handler raises (nothing is recorded then).
    """
    if handler.idempotent is not True:
        return Outcome(ran=True, result=handler.call(envelope))
    model = record_model()
    alias = database_of(handler)
    recorded = False
    try:
        with transaction.atomic(using=alias):
            model._default_manager.using(alias).create(
                message_id=envelope.message_id, handler=handler.actor_name
            )
            recorded = True
            result = handler.call(envelope)
    except IntegrityError:
        if recorded:  # the handler's own writes, or its commit: not ours to swallow
            raise
        logger.info(
            "Message %s was already handled by %s: acknowledged without running it again.",
            envelope.message_id,
            handler.actor_name,
        )
        return Outcome(ran=False)
    return Outcome(ran=True, result=result)


def databases(handlers: Iterable[Handler] | None = None) -> set[str]:
    """The database aliases that hold the records of ``handlers`` (every idempotent handler by default)."""
    chosen = locator.handlers if handlers is None else handlers
    return {database_of(handler) for handler in chosen if handler.idempotent is True}


def prune(older_than: timedelta | None = None, *, using: Iterable[str] | None = None) -> int:
    """Delete the records older than ``older_than`` (``HANDLED_TTL`` by default); how many were deleted.

    ``using``: the database aliases to prune; by default those of every idempotent handler,
    and the router's choice for the model.
    """
    if older_than is None:
        older_than = timedelta(seconds=messenger_settings.HANDLED_TTL)
    model = record_model()
    aliases = set(using) if using is not None else databases() | {str(router.db_for_write(model))}
    cutoff = timezone.now() - older_than
    deleted = 0
    for alias in sorted(aliases):
        count, _ = model._default_manager.using(alias).filter(handled_at__lt=cutoff).delete()
        deleted += count
    return deleted
