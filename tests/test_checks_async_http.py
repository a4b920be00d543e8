"""E015 (tracked writes without the status URL) and W015 (an idempotency cache not shared)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import include, path
from rest_framework.routers import SimpleRouter

from django_messenger.checks import check_async_http
from django_messenger.viewsets import MessengerViewSet
from tests.testapp.messages import Ping
from tests.testapp.serializers import PingSerializer


class TrackedViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Ping
    messenger_track = True


class UntrackedViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Ping


def _urls(viewset: type, *, status: bool) -> type:
    router = SimpleRouter()
    router.register("things", viewset, basename="thing")
    patterns = list(router.urls)
    if status:
        patterns.append(path("api/", include("django_messenger.urls")))
    return type("Urls", (), {"urlpatterns": patterns})


def ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def test_e015_a_tracked_view_without_the_status_urls(settings: Any) -> None:
    settings.ROOT_URLCONF = _urls(TrackedViewSet, status=False)

    errors = check_async_http()

    assert ids(errors) == ["django_messenger.E015"]
    assert "tests.test_checks_async_http.TrackedViewSet" in errors[0].msg
    assert errors[0].hint and 'include("django_messenger.urls")' in errors[0].hint


def test_e015_the_status_setting_without_the_status_urls(settings: Any) -> None:
    settings.ROOT_URLCONF = _urls(UntrackedViewSet, status=False)
    settings.MESSENGER = {**settings.MESSENGER, "STATUS": True}

    errors = check_async_http()

    assert ids(errors) == ["django_messenger.E015"]
    assert "MESSENGER['STATUS']" in errors[0].msg


@pytest.mark.parametrize(("viewset", "status"), [(TrackedViewSet, True), (UntrackedViewSet, False)])
def test_no_e015_with_the_urls_or_without_tracking(settings: Any, viewset: type, status: bool) -> None:
    settings.ROOT_URLCONF = _urls(viewset, status=status)

    assert check_async_http() == []


@pytest.mark.parametrize(
    ("caches", "expected"),
    [
        ({"idem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}, "LocMemCache"),
        ({"idem": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}, "DummyCache"),
        ({}, "no cache"),
    ],
)
def test_w015_an_idempotency_cache_no_other_process_shares(settings: Any, caches: Any, expected: str) -> None:
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}, **caches}
    settings.MESSENGER = {**settings.MESSENGER, "IDEMPOTENCY_CACHE": "idem"}

    warnings = check_async_http()

    assert ids(warnings) == ["django_messenger.W015"]
    assert expected in warnings[0].msg


def test_no_w015_for_a_shared_cache(settings: Any) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "idem": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "idem"},
    }
    settings.MESSENGER = {**settings.MESSENGER, "IDEMPOTENCY_CACHE": "idem"}

    assert check_async_http() == []
