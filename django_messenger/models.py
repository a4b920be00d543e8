"""The failure store: messages whose handler failed for good, kept until a person acts."""

from __future__ import annotations

from django.db import models


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
    payload = models.JSONField(null=True, blank=True, help_text="The envelope as sent.")
    error = models.TextField()
    traceback = models.TextField(blank=True)
    tries = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()

    class Meta:
        ordering = ["-last_failed_at", "-id"]
        verbose_name = "failed message"
        verbose_name_plural = "failed messages"

    def __str__(self) -> str:
        return f"{self.message_id or self.broker_message_id} {self.handler}"
