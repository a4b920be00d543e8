"""``python manage.py messenger_prune``: forget old status records and expired idempotency keys."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ... import tracking


class Command(BaseCommand):
    help = (
        "Delete message status records older than MESSENGER['STATUS_TTL'] and Idempotency-Key records "
        "older than MESSENGER['IDEMPOTENCY_TTL']. Run it periodically (cron, a scheduled job)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        statuses, keys = tracking.prune()
        self.stdout.write(f"Deleted {statuses} status record(s) and {keys} idempotency key(s).")
