"""The status of tracked messages: signed status tokens, outcomes recorded by workers, pruning.

A tracked write (``MESSENGER["STATUS"]`` or a view's ``messenger_track``) carries a
:class:`~django_messenger.stamps.TrackStamp` and answers 202 with a ``Location`` whose
``token`` query parameter is signed with ``SECRET_KEY``: it binds the message id, the
sender and the time of the dispatch. Nothing is written at dispatch. A worker records each
handler's outcome in a :class:`~django_messenger.models.MessageStatus` row; until the first
one, a valid token reads as ``pending`` and an unknown or forged one as nothing (404).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core import signing
from django.db import IntegrityError, router, transaction
from django.utils import timezone

from .conf import messenger_settings
from .stamps import TrackStamp

if TYPE_CHECKING:
    from .models import IdempotencyKey, MessageStatus

logger = logging.getLogger("django_messenger")

_SALT = "django_messenger.status"

#: What a client reads when a handler failed for good: never the exception's text (it may name
#: hosts or data), but where an operator finds the failure.
FAILED_SUMMARY = "A handler failed for good; the failure is kept for an operator (messenger_failed show ID)."


def _statuses() -> type[MessageStatus]:
    """The model, looked up when used: views import this module before the app registry is ready."""
    return apps.get_model("django_messenger", "MessageStatus")


def _keys() -> type[IdempotencyKey]:
    return apps.get_model("django_messenger", "IdempotencyKey")


def owner_of(user: Any) -> str:
    """The owner key of ``user``: its primary key as a string, or ``""`` when anonymous."""
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    return str(user.pk)


def _signer(owner: str) -> signing.TimestampSigner:
    # The owner is part of the salt: a token signed for one user does not verify for another.
    return signing.TimestampSigner(salt=f"{_SALT}:{owner}", algorithm="sha256")


def make_token(message_id: uuid.UUID, owner: str) -> str:
    """The ``token`` of a status ``Location``: the dispatch time and a signature (``ts:sig``)."""
    signed = _signer(owner).sign(str(message_id))
    return signed.removeprefix(f"{message_id}:")


def token_time(message_id: uuid.UUID, owner: str, token: str) -> datetime | None:
    """When the message of a valid, unexpired ``token`` was dispatched; None for any other token."""
    if not token or len(token) > 200:
        return None
    signed = f"{message_id}:{token}"
    try:
        _signer(owner).unsign(signed, max_age=timedelta(seconds=messenger_settings.STATUS_TTL))
        stamp = signing.b62_decode(token.split(":", 1)[0])
    except (signing.BadSignature, ValueError):
        return None
    return datetime.fromtimestamp(stamp, tz=UTC)


@dataclass(frozen=True)
class Status:
    """What a status resource answers."""

    message_id: uuid.UUID
    status: str
    created_at: datetime
    updated_at: datetime
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.message_id),
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
        if self.status == "failed":
            data["error"] = self.error or FAILED_SUMMARY
        return data


def read(message_id: uuid.UUID, *, user: Any, token: str = "") -> Status | None:
    """The status of ``message_id`` as ``user`` may see it, or None (answered as a 404).

    Staff read every recorded status; a user reads those of the writes they sent (an anonymous
    sender only with the token of its ``Location``); a valid token with no record yet is pending.
    """
    owner = owner_of(user)
    row = _statuses().objects.filter(message_id=message_id).first()
    if row is not None:
        staff = bool(getattr(user, "is_staff", False)) and owner != ""
        mine = row.owner == owner and (owner != "" or token_time(message_id, owner, token) is not None)
        if not (staff or mine):
            return None
        return Status(
            message_id=row.message_id,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
            error=FAILED_SUMMARY if row.failed else None,
        )
    sent_at = token_time(message_id, owner, token)
    if sent_at is None:
        return None
    return Status(message_id=message_id, status="pending", created_at=sent_at, updated_at=sent_at)


# -- the worker side ------------------------------------------------------------------------


def track_stamp(payload: Any) -> TrackStamp | None:
    """The :class:`TrackStamp` of an encoded envelope, or None (untracked, or not an envelope)."""
    if not isinstance(payload, dict):
        return None
    for item in payload.get("stamps") or ():
        if isinstance(item, dict) and item.get("name") == TrackStamp.wire_name:
            try:
                return TrackStamp.from_wire(item["data"])
            except (KeyError, TypeError, ValueError, AttributeError):
                return None
    return None


def record(
    message_id: uuid.UUID,
    stamp: TrackStamp,
    *,
    handler: str,
    failed: bool,
    sent_at: datetime | None = None,
) -> MessageStatus:
    """Record that ``handler`` handled (or failed for good on) a tracked message.

    A message's first outcome is one INSERT. Later ones (the other handlers of a fan-out, a
    retry) update that row under its row lock, so that concurrent workers never lose one
    another's outcome. A handler that handles a message it failed on before (a
    ``messenger_failed retry``) turns its failure into a success.
    """
    now = timezone.now()
    first = _insert_first(
        message_id, stamp, handler=handler, failed=failed, created_at=sent_at or now, now=now
    )
    if first is not None:
        return first
    alias = router.db_for_write(_statuses())
    with transaction.atomic(using=alias):
        row, _ = (
            _statuses()
            .objects.using(alias)
            .select_for_update()
            .get_or_create(
                message_id=message_id,
                defaults={
                    "owner": stamp.owner[:255],
                    "handlers": max(1, stamp.handlers),
                    "created_at": sent_at or now,
                    "updated_at": now,
                },
            )
        )
        fields: Any = row  # handled and failed are JSON (JSONTextField), typed as text
        handled = [name for name in fields.handled if name != handler]
        failures = {name: error for name, error in fields.failed.items() if name != handler}
        if failed:
            failures[handler] = FAILED_SUMMARY
        else:
            handled.append(handler)
        fields.handled, fields.failed, row.updated_at = handled, failures, now
        row.save(update_fields=["handled", "failed", "updated_at"])
    return row


def _insert_first(
    message_id: uuid.UUID,
    stamp: TrackStamp,
    *,
    handler: str,
    failed: bool,
    created_at: datetime,
    now: datetime,
) -> MessageStatus | None:
    """The message's first outcome as one INSERT (the common case: no row is written at dispatch),
    or None when its row exists already (another handler of a fan-out, or an earlier try): then
    :func:`record` updates that row under its lock.

    Outside a transaction the INSERT is the one statement (autocommit); inside one (a synchronous
    dispatch in a request's transaction) it runs in a savepoint, so that a conflict leaves the
    caller's transaction usable.
    """
    model = _statuses()
    alias = router.db_for_write(model)
    row = model(
        message_id=message_id,
        owner=stamp.owner[:255],
        handlers=max(1, stamp.handlers),
        created_at=created_at,
        updated_at=now,
    )
    fields: Any = row  # handled and failed are JSON (JSONTextField), typed as text
    fields.handled = [] if failed else [handler]
    fields.failed = {handler: FAILED_SUMMARY} if failed else {}
    try:
        if transaction.get_connection(alias).in_atomic_block:
            with transaction.atomic(using=alias):
                row.save(using=alias, force_insert=True)
        else:
            row.save(using=alias, force_insert=True)
    except IntegrityError:
        return None
    return row


def record_quietly(payload: Any, *, handler: str, failed: bool, sent_at: datetime | None = None) -> None:
    """:func:`record` for a worker's hook: untracked messages cost nothing, errors are logged."""
    stamp = track_stamp(payload)
    if stamp is None:
        return
    try:
        message_id = uuid.UUID(str(payload.get("id")))
        record(message_id, stamp, handler=handler, failed=failed, sent_at=sent_at)
    except Exception:  # the handler's outcome stands; only its status record is missing
        logger.exception("Could not record the status of message %s.", payload.get("id"))


def record_handled(message_id: uuid.UUID, stamp: TrackStamp, handlers: list[str]) -> None:
    """Record a tracked message handled synchronously, by every one of ``handlers``."""
    for name in handlers:
        record(message_id, stamp, handler=name, failed=False)


# -- pruning --------------------------------------------------------------------------------


def prune(now: datetime | None = None) -> tuple[int, int]:
    """Delete status records older than ``STATUS_TTL`` and keys older than ``IDEMPOTENCY_TTL``.

    Returns how many of each were deleted.
    """
    now = now or timezone.now()
    statuses, _ = (
        _statuses()
        .objects.filter(updated_at__lt=now - timedelta(seconds=messenger_settings.STATUS_TTL))
        .delete()
    )
    keys, _ = (
        _keys()
        .objects.filter(created_at__lt=now - timedelta(seconds=messenger_settings.IDEMPOTENCY_TTL))
        .delete()
    )
    return statuses, keys
