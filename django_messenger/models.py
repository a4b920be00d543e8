"""The failure store: messages whose handler failed for good, kept until a person acts."""

from __future__ import annotations

import json
from typing import Any

from django.db import models
from django.utils import timezone


class JSONTextField(models.TextField):
    """JSON kept as text, on every database.

    A ``JSONField`` is PostgreSQL's ``jsonb``, which refuses some valid JSON: a string
    holding ``\\u0000``. An envelope that a handler failed on must be storable whatever
    it holds, so the failure store keeps it as JSON text (``json.dumps``, ASCII only)
    and gives back the decoded value.
    """

    def get_prep_value(self, value: Any) -> Any:
        return None if value is None else json.dumps(value)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return None if value is None else json.loads(value)

    def to_python(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj))


class FailedMessage(models.Model):
    """One handler's final failure on one message (after its last retry, or poison).

    ``message_id`` is the envelope's id — the one ``bus.dispatch`` returned, the
    handler saw and the ``Messenger-Message-Id`` header carried — or null when the
    message was too malformed to have one. Rows never expire.
    """

    message_id = models.UUIDField(null=True, blank=True, db_index=True)
    broker_message_id = models.CharField(max_length=64, blank=True)
    message_type = models.CharField(max_length=255, blank=True)
    handler = models.CharField(max_length=255, db_index=True)
    queue_name = models.CharField(max_length=255, blank=True)
    payload = JSONTextField(null=True, blank=True, help_text="The envelope as sent, as JSON text.")
    error = models.TextField()
    traceback = models.TextField(blank=True)
    tries = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    due_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a delayed message was due; a retry before then waits for the rest of its delay.",
    )

    class Meta:
        ordering = ["-last_failed_at", "-id"]
        constraints = [
            # One row a failure: a redelivered or twice-held failure is not stored again.
            models.UniqueConstraint(
                fields=["broker_message_id", "handler"],
                condition=~models.Q(broker_message_id=""),
                name="django_messenger_one_row_a_failure",
            )
        ]
        verbose_name = "failed message"
        verbose_name_plural = "failed messages"

    def __str__(self) -> str:
        return f"{self.message_id or self.broker_message_id} {self.handler}"


class FailureDashboard(FailedMessage):
    """The admin dashboard's entry in the admin index: a proxy of the failure store.

    No table and no permissions of its own: the dashboard (``admin.FailureDashboardAdmin``) is
    shown to staff who may view failed messages.
    """

    class Meta:
        proxy = True
        default_permissions = ()
        verbose_name = "dashboard"
        verbose_name_plural = "dashboard"


class HandledMessage(models.Model):
    """An idempotent handler's committed run on one message: ``(message_id, handler)``.

    Written in the transaction that runs the handler (``@handler(idempotent=True)``, see
    :mod:`django_messenger.once`), so it exists exactly when the handler's writes were
    committed; a redelivered message whose row exists is acknowledged without running the
    handler again. ``handler`` is the handler's actor name. Rows older than
    ``MESSENGER["HANDLED_TTL"]`` are deleted by ``manage.py messenger_handled prune``.
    """

    message_id = models.UUIDField()
    handler = models.CharField(max_length=255)
    handled_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message_id", "handler"], name="django_messenger_handled_once")
        ]
        verbose_name = "handled message"
        verbose_name_plural = "handled messages"

    def __str__(self) -> str:
        return f"{self.message_id} {self.handler}"


class OutboxMessage(models.Model):
    """A message dispatched to a transport with ``"outbox": True``, waiting for (or past) its publish.

    The dispatch writes the row in the caller's transaction: it exists if and only if that
    transaction commits. A relay (django_messenger.outbox) publishes the rows in ``id`` order
    and sets ``sent_at``; sent rows are deleted after ``MESSENGER["OUTBOX_KEEP_SENT"]`` seconds.
    ``message`` is the Dramatiq message as Dramatiq's encoder wrote it, its id ``broker_message_id``.
    """

    message_id = models.UUIDField(db_index=True, help_text="The envelope's id.")
    broker_message_id = models.CharField(max_length=64)
    transport = models.CharField(max_length=255)
    queue_name = models.CharField(max_length=255)
    actor_name = models.CharField(max_length=255)
    message = models.BinaryField(help_text="The Dramatiq message, encoded by DRAMATIQ_ENCODER.")
    delay = models.BigIntegerField(null=True, blank=True, help_text="The DelayStamp's milliseconds.")
    created_at = models.DateTimeField()
    available_at = models.DateTimeField(
        null=True, blank=True, help_text="Not published before then (a publish that failed waits)."
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Publishes that failed.")
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # What the relay reads: the unsent rows, in id order.
            models.Index(
                fields=["id"], condition=models.Q(sent_at__isnull=True), name="django_messenger_outbox_unsent"
            ),
            models.Index(fields=["sent_at"], name="django_messenger_outbox_sent"),
        ]
        verbose_name = "outbox message"
        verbose_name_plural = "outbox messages"

    def __str__(self) -> str:
        return f"{self.message_id} to {self.transport}"


class MessageStatus(models.Model):
    """The outcome of a tracked message, written by the workers (docs/async-http.md).

    No row is written when the message is dispatched: until a worker records an outcome, the
    signed ``Location`` of the 202 reads as ``pending``. ``handled`` lists the handlers (actor
    names) that handled it, ``failed`` maps those that failed for good to an error summary;
    ``handlers`` is how many handlers the message type had when it was dispatched (fan-out).
    ``messenger_prune`` deletes rows older than ``MESSENGER["STATUS_TTL"]``.
    """

    message_id = models.UUIDField(primary_key=True)
    owner = models.CharField(max_length=255, blank=True, help_text="The sender's user pk; empty: anonymous.")
    handlers = models.PositiveIntegerField(default=1)
    handled = JSONTextField(default=list)
    failed = JSONTextField(default=dict)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "message status"
        verbose_name_plural = "message statuses"

    def __str__(self) -> str:
        return f"{self.message_id} {self.status}"

    @property
    def status(self) -> str:
        """``"failed"``: a handler failed for good; ``"handled"``: all handled it; else ``"pending"``."""
        if self.failed:
            return "failed"
        if len(self.handled) >= self.handlers:
            return "handled"
        return "pending"


class IdempotencyKey(models.Model):
    """One ``Idempotency-Key`` of one user: the request it came with and, once answered, the answer.

    A row whose ``status_code`` is null is in flight: its request is being answered (since
    ``locked_at``). The row is inserted before anything is dispatched, so that of two requests
    racing with one key only one inserts it (the unique constraint) and dispatches.
    """

    owner = models.CharField(max_length=255, blank=True)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the method, path and body.")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    headers = JSONTextField(default=dict)
    body = models.TextField(blank=True, help_text="The answer's body, base64.")
    created_at = models.DateTimeField(db_index=True)
    locked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="django_messenger_one_row_a_key"),
        ]
        verbose_name = "idempotency key"
        verbose_name_plural = "idempotency keys"

    def __str__(self) -> str:
        return f"{self.owner or 'anonymous'} {self.key}"
