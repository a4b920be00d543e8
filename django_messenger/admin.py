"""The failure store in the Django admin (read, retry, remove), and the outbox's rows (read)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest

from . import failures
from .exceptions import BrokerUnavailable, FailedMessageGone, MessengerError
from .models import FailedMessage, OutboxMessage


@admin.register(FailedMessage)
class FailedMessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg,unused-ignore]
    list_display = ["message_id", "message_type", "handler", "short_error", "last_failed_at", "tries"]
    list_filter = ["handler", "message_type"]
    search_fields = ["message_id", "broker_message_id", "error"]
    date_hierarchy = "last_failed_at"
    actions = ["retry_selected"]
    readonly_fields = [field.name for field in FailedMessage._meta.fields]

    @admin.display(description="error")
    def short_error(self, failed: FailedMessage) -> str:
        return failed.error if len(failed.error) <= 80 else failed.error[:79] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Retrying sends the message again and deletes the row: it needs the *change* permission.

        ``has_change_permission`` stays False (the rows are read-only); a view-only user gets
        no retry action, and Django's admin ignores a forged POST of it.
        """
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    @admin.action(
        description="Retry the selected messages (their failed handler only)", permissions=["retry"]
    )
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[FailedMessage]) -> None:
        sent = 0
        for failed in queryset:
            try:
                failures.retry(failed)
                sent += 1
            except FailedMessageGone as exc:
                self.message_user(request, f"{exc} Nothing was sent.", messages.WARNING)
            except BrokerUnavailable:
                self.message_user(
                    request,
                    f"{failed}: the message broker did not accept it; it stays in the list. Retry later.",
                    messages.ERROR,
                )
            except MessengerError as exc:
                self.message_user(request, f"{failed}: {exc}", messages.ERROR)
        if sent:
            self.message_user(request, f"{sent} message(s) sent again.", messages.SUCCESS)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg,unused-ignore]
    """The transactional outbox's rows, read-only: what waits for the relay, and why."""

    list_display = ["id", "message_id", "transport", "created_at", "sent_at", "attempts", "short_error"]
    list_filter = ["transport", ("sent_at", admin.EmptyFieldListFilter)]
    search_fields = ["message_id", "broker_message_id"]
    exclude = ["message"]  # the encoded Dramatiq message: bytes, not for reading
    readonly_fields = [field.name for field in OutboxMessage._meta.fields if field.name != "message"]

    @admin.display(description="last error")
    def short_error(self, row: OutboxMessage) -> str:
        return row.last_error if len(row.last_error) <= 80 else row.last_error[:79] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
