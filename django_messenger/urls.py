"""``path("api/", include("django_messenger.urls"))``: the status resource of tracked writes."""

from __future__ import annotations

from django.urls import path

from .status import MessageStatusView

app_name = "django_messenger"

urlpatterns = [
    path("messages/<uuid:message_id>/", MessageStatusView.as_view(), name="message-status"),
]
