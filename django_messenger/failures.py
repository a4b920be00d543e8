"""Recording final failures in the database, and retrying or removing them.

The worker's :class:`~django_messenger.middleware.MessengerMiddleware` calls
:func:`record` when Dramatiq dead-letters one of messenger's messages (retries
exhausted, an error in ``throws``, or a poison message). ``messenger_failed`` and
the Django admin call :func:`retry` and :func:`remove`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from dramatiq import Message

from .actors import FANOUT_PREFIX
from .exceptions import FailedMessageGone, MessengerError
from .middleware import FIRST_FAILED_AT, TRIES
from .models import FailedMessage
from .registry import registry
from .sending import publish

logger = logging.getLogger("django_messenger")


def _timestamp(millis: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(tz=UTC)


def is_messenger_message(message: Any) -> bool:
    """Whether a Dramatiq message is one of messenger's (a handler's, a fan-out's, or envelope-shaped)."""
    name = getattr(message, "actor_name", "")
    if isinstance(name, str) and (name.startswith(FANOUT_PREFIX) or registry.handler_named(name) is not None):
        return True
    args = getattr(message, "args", None)
    if not args:
        return False
    first = args[0]
    return isinstance(first, dict) and "v" in first and "type" in first


def record(message: Any, *, error: str, traceback: str = "") -> FailedMessage:
    """Store the final failure of a Dramatiq ``message``."""
    payload = message.args[0] if message.args else None
    message_id = None
    message_type = ""
    if isinstance(payload, dict):
        try:
            message_id = uuid.UUID(str(payload.get("id")))
        except ValueError:
            message_id = None
        message_type = str(payload.get("type", ""))[:255]
    options = message.options
    now = datetime.now(tz=UTC)
    failed = FailedMessage.objects.create(
        message_id=message_id,
        broker_message_id=str(message.message_id)[:64],
        message_type=message_type,
        handler=str(message.actor_name)[:255],
        queue_name=str(message.queue_name)[:255],
        payload=payload,
        error=error,
        traceback=traceback,
        tries=max(1, int(options.get(TRIES, 1))),
        first_failed_at=_timestamp(options[FIRST_FAILED_AT]) if FIRST_FAILED_AT in options else now,
        last_failed_at=now,
    )
    logger.error(
        "Message %s (%s) failed for good in %s: %s",
        message_id or message.message_id,
        message_type,
        message.actor_name,
        error,
    )
    return failed


def select(ids: Iterable[str] = (), *, handler: str | None = None, all_: bool = False) -> list[FailedMessage]:
    """The failures with these envelope message ids (every one must exist), or all of them."""
    queryset = FailedMessage.objects.all()
    if handler:
        queryset = queryset.filter(handler=handler)
    if all_:
        return list(queryset)
    found: list[FailedMessage] = []
    missing = []
    for raw in ids:
        try:
            message_id = uuid.UUID(str(raw))
        except ValueError:
            missing.append(str(raw))
            continue
        rows = list(queryset.filter(message_id=message_id))
        if not rows:
            missing.append(str(raw))
        found.extend(rows)
    if missing:
        raise MessengerError(f"No failed message with id {', '.join(missing)}.")
    return found


def retry(failed: FailedMessage) -> Message[Any]:
    """Send the failed envelope again to the handler that failed (only that one), then forget it.

    The row is deleted and the message published in one transaction: of concurrent retries
    of one failure exactly one sends it, the others raise :class:`FailedMessageGone`; a
    publish that fails (:class:`BrokerUnavailable`) rolls the delete back, so the row stays.
    """
    handler = registry.handler_named(failed.handler)
    if failed.handler.startswith(FANOUT_PREFIX):
        actor = registry.broker.actors.get(failed.handler) if registry.broker is not None else None
    else:
        actor = handler.actor if handler is not None else None
    if actor is None:
        raise MessengerError(f"No handler named {failed.handler!r} in this project: it cannot be retried.")
    message: Message[Any] = Message(
        queue_name=actor.queue_name,
        actor_name=actor.actor_name,
        args=(failed.payload,),
        kwargs={},
        options={},
    )
    with transaction.atomic():
        if not _claim(failed):
            raise FailedMessageGone(failed.message_id or failed.broker_message_id)
        publish(actor.broker, message)
    return message


def _claim(failed: FailedMessage) -> bool:
    """Delete ``failed``'s row in the current transaction; whether this call is the one that deleted it.

    A concurrent claim of the same row waits on its row lock until this transaction ends,
    then deletes nothing (committed) or takes the row itself (rolled back).
    """
    _, deleted = FailedMessage.objects.filter(pk=failed.pk).delete()
    return deleted.get(FailedMessage._meta.label, 0) == 1


def remove(failures: Iterable[FailedMessage]) -> int:
    ids = [failed.pk for failed in failures]
    deleted, _ = FailedMessage.objects.filter(pk__in=ids).delete()
    return deleted
