"""One view per variant of the HTTP benchmark; each validates the same serializer and answers 202.

Every answer is a 202 with an empty body, as messenger's is.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from rest_framework.request import Request
from rest_framework.views import APIView

from django_messenger.viewsets import MessengerViewSet

from .messages import Ping, TimedPing
from .serializers import PingSerializer, TimedPingSerializer
from .tasks import raw_noop, raw_timed

try:
    from benchmarks.project.celery_app import noop as celery_noop
except ImportError:  # celery is optional (the bench extra)
    celery_noop = None


def accepted() -> HttpResponse:
    response = HttpResponse(status=202)
    del response["Content-Type"]
    response["Content-Length"] = "0"
    return response


class BareView(APIView):
    """(a) Validate and answer 202; nothing is sent."""

    def post(self, request: Request) -> HttpResponse:
        serializer = PingSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return accepted()


class DramatiqView(APIView):
    """(b)/(c) Validate, ``actor.send()`` by hand, answer 202."""

    def post(self, request: Request) -> HttpResponse:
        serializer = PingSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw_noop.send(**serializer.validated_data)
        return accepted()


class CeleryView(APIView):
    """(f) Validate, Celery ``.delay()``, answer 202."""

    def post(self, request: Request) -> HttpResponse:
        if celery_noop is None:
            return HttpResponse("celery is not installed", status=501)
        serializer = PingSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        celery_noop.delay(**serializer.validated_data)
        return accepted()


class PingViewSet(MessengerViewSet):
    """(d)/(e) The messenger command endpoint."""

    serializer_class = PingSerializer
    message_class = Ping


class TrackedPingViewSet(PingViewSet):
    """(h) The same endpoint, tracked: a TrackStamp and a ``Location`` with a signed token."""

    messenger_track = True


class KeyedPingViewSet(PingViewSet):
    """(i)/(j) The same endpoint taking an ``Idempotency-Key`` (the database or a cache store)."""

    messenger_idempotency = "optional"


class TimedDramatiqView(APIView):
    """End to end, the hand-written side."""

    def post(self, request: Request, *args: Any) -> HttpResponse:
        serializer = TimedPingSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw_timed.send(**serializer.validated_data)
        return accepted()


class TimedPingViewSet(MessengerViewSet):
    """End to end, the messenger side."""

    serializer_class = TimedPingSerializer
    message_class = TimedPing
