"""The failure store in the Django admin (read, retry, remove), the queues and failures dashboard,
and the outbox's rows (read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from . import failures, stats
from .exceptions import BrokerUnavailable, FailedMessageGone, MessengerError
from .models import FailedMessage, FailureDashboard, OutboxMessage


def retry_and_tell(model_admin: admin.ModelAdmin, request: HttpRequest, failed: FailedMessage) -> bool:  # type: ignore[type-arg,unused-ignore]
    """Send ``failed`` again to its handler (``failures.retry``); tell the user why not, if not.

    Returns whether it was sent.
    """
    try:
        failures.retry(failed)
    except FailedMessageGone as exc:
        model_admin.message_user(request, f"{exc} Nothing was sent.", messages.WARNING)
    except BrokerUnavailable:
        model_admin.message_user(
            request,
            f"{failed}: the message broker did not accept it; it stays in the list. Retry later.",
            messages.ERROR,
        )
    except MessengerError as exc:
        model_admin.message_user(request, f"{failed}: {exc}", messages.ERROR)
    else:
        return True
    return False


def may_view_failures(request: HttpRequest) -> bool:
    """Whether the user may read the failure store: its *view* (or *change*) permission."""
    opts = FailedMessage._meta
    return any(
        request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
        for action in ("view", "change")
    )


def may_retry_failures(request: HttpRequest) -> bool:
    """Retrying sends the message again and deletes the row: it needs the *change* permission."""
    opts = FailedMessage._meta
    return bool(request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}"))


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
        return may_retry_failures(request)

    @admin.action(
        description="Retry the selected messages (their failed handler only)", permissions=["retry"]
    )
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[FailedMessage]) -> None:
        sent = sum(retry_and_tell(self, request, failed) for failed in queryset)
        if sent:
            self.message_user(request, f"{sent} message(s) sent again.", messages.SUCCESS)


#: The days the dashboard's chart shows, and the latest failures it lists.
CHART_DAYS = 14
LATEST_FAILURES = 20
#: The chart's geometry, in SVG user units: one bar a day.
BAR_WIDTH, BAR_GAP, CHART_HEIGHT = 10, 2, 40


@dataclass(frozen=True)
class Bar:
    day: str
    count: int
    x: int
    y: int
    height: int


@dataclass(frozen=True)
class HandlerChart:
    handler: str
    total: int
    bars: list[Bar]


def failure_charts(days: int = CHART_DAYS) -> tuple[list[HandlerChart], int, str, str]:
    """One bar chart a handler of its failures per day, on a scale shared by all of them.

    Returns the charts, the chart width, and the first and last day shown.
    """
    window, per_handler = stats.failures_over_time(days)
    peak = max((count for counts in per_handler.values() for count in counts), default=0)
    charts = []
    for handler, counts in per_handler.items():
        bars = []
        for position, (day, count) in enumerate(zip(window, counts, strict=True)):
            # a day with failures shows at least a 2-unit bar, however small its share of the peak
            height = 0 if count == 0 else max(2, round(CHART_HEIGHT * count / peak))
            bars.append(
                Bar(
                    day=day.isoformat(),
                    count=count,
                    x=position * (BAR_WIDTH + BAR_GAP),
                    y=CHART_HEIGHT - height,
                    height=height,
                )
            )
        charts.append(HandlerChart(handler=handler, total=sum(counts), bars=bars))
    width = days * (BAR_WIDTH + BAR_GAP) - BAR_GAP
    return charts, width, window[0].isoformat(), window[-1].isoformat()


@admin.register(FailureDashboard)
class FailureDashboardAdmin(admin.ModelAdmin):  # type: ignore[type-arg,unused-ignore]
    """The dashboard: queue depths, failures per handler over time, the latest failures, retry.

    Listed in the admin index as "Dashboard" beside "Failed messages", for staff who may view
    failed messages; retrying needs the change permission, as in the failed messages' admin.
    """

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_view_failures(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view(self.dashboard_view)
        return [path("", view, name="{}_{}_changelist".format(*info))]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self.retry_view(request)
        queues: list[stats.QueueStats] | None = None
        queues_notice = ""
        try:
            queues = stats.queue_stats()
        except MessengerError as exc:  # StatsUnavailable and NoReader among them: texts without hosts
            queues_notice = str(exc)
        charts, chart_width, first_day, last_day = failure_charts()
        context = {
            **self.admin_site.each_context(request),
            "title": "Messenger dashboard",
            "opts": self.opts,
            "failed_opts": FailedMessage._meta,
            "queues": queues,
            "queues_notice": queues_notice,
            "queue_notes": [
                (note, [queue.queue for queue in queues or () if note in queue.notes])
                for note in sorted({note for queue in queues or () for note in queue.notes})
            ],
            "handlers": [
                (row, next((chart for chart in charts if chart.handler == row.handler), None))
                for row in stats.failures_per_handler()
            ],
            "chart_days": CHART_DAYS,
            "chart_width": chart_width,
            "chart_height": CHART_HEIGHT,
            "bar_width": BAR_WIDTH,
            "first_day": first_day,
            "last_day": last_day,
            "latest": FailedMessage.objects.all()[:LATEST_FAILURES],
            "total_failures": FailedMessage.objects.count(),
            "can_retry": may_retry_failures(request),
        }
        return TemplateResponse(request, "admin/django_messenger/dashboard.html", context)

    def retry_view(self, request: HttpRequest) -> HttpResponse:
        """POST ``retry=<pk>``: send that failure again to its failed handler (``failures.retry``)."""
        if not may_retry_failures(request):
            raise PermissionDenied
        dashboard = reverse(f"{self.admin_site.name}:django_messenger_failuredashboard_changelist")
        raw = str(request.POST.get("retry", ""))
        failed = (
            FailedMessage.objects.filter(pk=int(raw)).first() if raw.isdigit() and len(raw) < 19 else None
        )
        if failed is None:
            self.message_user(
                request,
                "That failed message was already retried or removed: nothing was sent.",
                messages.WARNING,
            )
            return HttpResponseRedirect(dashboard)
        if retry_and_tell(self, request, failed):
            # a text that starts with a word: the admin capitalises the first letter of a message
            self.message_user(request, f"Sent {failed} again to {failed.handler}.", messages.SUCCESS)
        return HttpResponseRedirect(dashboard)


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
