"""Recording final failures in the database, and retrying or removing them.

The worker's :class:`~django_messenger.middleware.MessengerMiddleware` calls
:func:`keep` when Dramatiq is about to dead-letter one of messenger's messages
(retries exhausted, an error in ``throws``, a retry that could not be enqueued, or a
poison message). ``messenger_failed`` and the Django admin call :func:`retry` and
:func:`remove`.

A failure is not lost when the database is down (which is often why the handler
failed): :func:`keep` then *holds* it, by sending a copy of the message, marked with
the :data:`HELD` option, to the delay queue of its own queue. When a worker of that
queue receives the copy, it does not run the handler: it records the failure and
acknowledges the copy, or, while the database is still down, holds it again with a
longer delay (1 s doubling up to 5 minutes, with no limit on attempts). The original
is dead-lettered as Dramatiq does. This works on every Dramatiq broker; only when the
broker refuses the held copy too is the failure left in the broker's dead letters
alone (and logged), where Dramatiq's dead-letter expiry applies.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, connections, transaction
from django.db.models import Q
from dramatiq import Message
from dramatiq.common import compute_backoff, current_millis, q_name

from .delays import ETA, first_hop, hop_milliseconds
from .exceptions import BrokerUnavailable, FailedMessageGone, MessengerError
from .locator import locator
from .models import FailedMessage
from .publishing import publish
from .transports.dramatiq.binding import FANOUT_PREFIX, binding

logger = logging.getLogger("django_messenger")

#: When the message first failed (epoch milliseconds), noted by the worker (MessengerMiddleware) on
#: a failing message: Dramatiq does not keep it, so it travels with the retries as this option.
FIRST_FAILED_AT = "messenger_first_failed_at"
#: The error to store instead of the stuffed exception's: set by RetryGuard just before it
#: dead-letters a message whose retry could not be enqueued, and carried by a held copy.
ERROR = "messenger_error"
#: Dramatiq's own option (``Retries``): the traceback of the last retried failure.
TRACEBACK = "traceback"
#: Dramatiq's own option (``Retries``): how many failures were retried so far.
RETRIES = "retries"
#: The tries of the message being processed, noted on the worker's message proxy (never sent):
#: ``retries`` before ``Retries`` counts the failure, plus one.
TRIES_ATTRIBUTE = "_messenger_tries"

#: The option that marks a held copy: how many times its failure was held so far.
HELD = "messenger_held"
#: The delay before the first attempt to record a held failure, and the longest one (ms).
HOLD_MIN_BACKOFF = 1_000
HOLD_MAX_BACKOFF = 300_000

#: Database errors that pass: the failure is held and recorded later.
_DATABASE_DOWN = (OperationalError, InterfaceError)


#: The longest error text or traceback kept in a message's options (and so in its failure
#: record), in characters: a message must not outgrow what a worker parses
#: (``dramatiq_encoder.max_body_size``) merely because its handler raised a long error.
MAX_ERROR_TEXT = 16 * 1024


def clip(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """``text``, or its beginning and its end when it is longer than ``limit`` characters."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"


def describe(exception: BaseException) -> str:
    """An exception as the failure store keeps it: its class's full name and its text."""
    return f"{type(exception).__module__}.{type(exception).__qualname__}: {exception}"


def format_traceback(exception: BaseException) -> str:
    """An exception's traceback as the failure store keeps it (30 frames at most, clipped)."""
    return clip(
        "".join(traceback.format_exception(type(exception), exception, exception.__traceback__, limit=30))
    )


def tries(message: Any) -> int:
    """How many times ``message`` was tried, the final failure included.

    Dramatiq's ``retries`` counts the failures ``Retries`` retried, and also counts the last one
    when it gave up on it; not a failure in ``throws``, nor a message rejected before it ran. So
    the worker notes the count before ``Retries`` sees the failure (``retries + 1``, on the
    message proxy: :data:`TRIES_ATTRIBUTE`); a message that did not fail here (a held copy)
    counts ``retries + 1`` from its options.
    """
    noted = getattr(message, TRIES_ATTRIBUTE, None)
    if isinstance(noted, int) and not isinstance(noted, bool):
        return noted
    try:
        return max(1, int(message.options.get(RETRIES, 0)) + 1)
    except (TypeError, ValueError):
        return 1


def _timestamp(millis: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(tz=UTC)


def is_messenger_message(message: Any) -> bool:
    """Whether a Dramatiq message is one of messenger's (a handler's, a fan-out's, or envelope-shaped)."""
    name = getattr(message, "actor_name", "")
    if isinstance(name, str) and (name.startswith(FANOUT_PREFIX) or locator.handler_named(name) is not None):
        return True
    args = getattr(message, "args", None)
    if not args:
        return False
    first = args[0]
    return isinstance(first, dict) and "v" in first and "type" in first


def _text(value: Any, limit: int | None = None) -> str:
    """``value`` as text a database accepts: PostgreSQL's text types refuse NUL characters,
    and UTF-8 cannot encode a lone surrogate (``"\\ud800"``, which JSON may carry)."""
    text = str(value).replace("\x00", "\\x00")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if limit is None else text[:limit]


def _due_at(options: Any) -> datetime | None:
    """When a delayed message was due (its ``messenger_eta`` option), if it has one."""
    eta = options.get(ETA)
    return _timestamp(eta) if isinstance(eta, int) and not isinstance(eta, bool) else None


def record(message: Any, *, error: str, traceback: str = "", tries: int = 1) -> FailedMessage:
    """Store the final failure of a Dramatiq ``message`` (once: a redelivery stores nothing more).

    ``tries`` counts the final failure (:func:`tries`).
    """
    broker_message_id = _text(message.message_id, 64)
    handler = _text(message.actor_name, 255)
    existing = FailedMessage.objects.filter(broker_message_id=broker_message_id, handler=handler).first()
    if existing is not None:
        return existing
    payload = message.args[0] if message.args else None
    message_id = None
    message_type = ""
    if isinstance(payload, dict):
        try:
            message_id = uuid.UUID(str(payload.get("id")))
        except ValueError:
            message_id = None
        message_type = _text(payload.get("type", ""), 255)
    options = message.options
    now = datetime.now(tz=UTC)
    fields = dict(
        message_id=message_id,
        broker_message_id=broker_message_id,
        message_type=message_type,
        handler=handler,
        queue_name=_text(q_name(str(message.queue_name)), 255),
        payload=payload,
        error=_text(error),
        traceback=_text(traceback),
        tries=max(1, tries),
        first_failed_at=_timestamp(options[FIRST_FAILED_AT]) if FIRST_FAILED_AT in options else now,
        last_failed_at=now,
        due_at=_due_at(options),
    )
    try:
        with transaction.atomic():
            failed = FailedMessage.objects.create(**fields)
    except IntegrityError:
        # Another worker stored this failure meanwhile (two held copies of it, say).
        return FailedMessage.objects.get(broker_message_id=broker_message_id, handler=handler)
    logger.error(
        "Message %s (%s) failed for good in %s: %s",
        message_id or message.message_id,
        message_type,
        message.actor_name,
        error,
    )
    return failed


def keep(message: Any, *, error: str, traceback: str = "", tries: int = 1) -> bool:
    """Record the final failure of ``message``, or hold it while the database is down.

    Errors other than an unavailable database (a bug, say) are logged: the message is still
    dead-lettered by the broker. Returns False only when the database is down and the broker
    refused the held copy too (the failure is nowhere but in the message).
    """
    try:
        record(message, error=error, traceback=traceback, tries=tries)
    except _DATABASE_DOWN as exc:
        return _hold_or_log(message, error=error, traceback=traceback, tries=tries, reason=exc)
    except Exception:
        logger.exception("Could not store the failure of message %s.", message.message_id)
    finally:
        connections.close_all()
    return True


def keep_held(message: Any) -> bool:
    """Record the failure a held copy carries, or hold it again; False when neither worked."""
    options = message.options
    error = str(options.get(ERROR) or "Dead-lettered by Dramatiq.")
    trace = str(options.get(TRACEBACK) or "")
    count = tries(message)
    try:
        record(message, error=error, traceback=trace, tries=count)
    except _DATABASE_DOWN as exc:
        return _hold_or_log(message, error=error, traceback=trace, tries=count, reason=exc)
    except Exception:
        logger.exception("Could not store the held failure of message %s.", message.message_id)
        return False
    finally:
        connections.close_all()
    return True


def hold(message: Any, *, error: str, traceback: str, tries: int = 1) -> Message[Any]:
    """Send a held copy of ``message`` (see the module's documentation) to be recorded later.

    The copy carries the failure in options: the error, Dramatiq's ``traceback``, and
    Dramatiq's ``retries`` as ``tries - 1`` (a held copy never runs, so ``retries + 1`` is
    the count to store, as for any message).

    Raises:
      BrokerUnavailable: the broker did not accept the copy.
    """
    attempts = int(message.options.get(HELD, 0))
    _, delay = compute_backoff(attempts, factor=HOLD_MIN_BACKOFF, max_backoff=HOLD_MAX_BACKOFF)
    held: Message[Any] = message.copy(
        queue_name=q_name(message.queue_name),
        options={
            HELD: attempts + 1,
            ERROR: clip(error),
            TRACEBACK: clip(traceback),
            RETRIES: max(0, tries - 1),
        },
    )
    if binding.broker is None:
        raise BrokerUnavailable("messenger is not bound to a broker.")
    return publish(binding.broker, held, delay=delay)


def _hold_or_log(message: Any, *, error: str, traceback: str, tries: int, reason: BaseException) -> bool:
    try:
        held = hold(message, error=error, traceback=traceback, tries=tries)
    except BrokerUnavailable as exc:
        logger.critical(
            "The failure of message %s could not be stored (%s) nor held on the broker (%s): it is "
            "only in the broker's dead letters.",
            message.message_id,
            reason,
            exc.reason,
        )
        return False
    logger.warning(
        "The failure of message %s could not be stored (%s): held on %s, stored when the database is back.",
        message.message_id,
        reason,
        held.queue_name,
    )
    return True


def select(ids: Iterable[str] = (), *, handler: str | None = None, all_: bool = False) -> list[FailedMessage]:
    """The failures with these ids (every one must exist), or all of them.

    An id is the envelope's ``message_id``, or, for a failure too malformed to have one, the
    broker's message id that ``messenger_failed list`` shows in its place.
    """
    queryset = FailedMessage.objects.all()
    if handler:
        queryset = queryset.filter(handler=handler)
    if all_:
        return list(queryset)
    found: list[FailedMessage] = []
    missing = []
    for raw in ids:
        try:
            by_id = Q(message_id=uuid.UUID(str(raw)))
        except ValueError:
            by_id = Q()
        rows = list(queryset.filter(by_id | Q(message_id=None, broker_message_id=str(raw)[:64])))
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
    actor = binding.actor_named(failed.handler)
    if actor is None:
        raise MessengerError(f"No handler named {failed.handler!r} in this project: it cannot be retried.")
    # A delayed message that failed before it was due (a refused delay hop) waits the rest.
    now = current_millis()
    remaining = int(failed.due_at.timestamp() * 1000) - now if failed.due_at is not None else 0
    delay, options = first_hop(remaining, hop=hop_milliseconds(), now=now) if remaining > 0 else (None, {})
    message: Message[Any] = actor.message_with_options(args=(failed.payload,), **options)
    with transaction.atomic():
        if not _claim(failed):
            raise FailedMessageGone(failed.message_id or failed.broker_message_id)
        publish(actor.broker, message, delay=delay)
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
