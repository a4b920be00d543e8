from datetime import timedelta

from rest_framework import authentication, permissions, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from django_messenger import bus
from django_messenger.mixins import MessengerMixin
from django_messenger.viewsets import MessengerViewSet

from .messages import Compute, Flaky, Ping, RenameArticle, Shout
from .models import Article
from .serializers import ArticleSerializer, ComputeSerializer, PingSerializer, RenameArticleSerializer


class PingViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Ping


class ComputeViewSet(MessengerViewSet):
    serializer_class = ComputeSerializer
    message_class = Compute
    messenger_output = True
    messenger_status = 200


class ArticleViewSet(MessengerMixin, viewsets.ModelViewSet):  # type: ignore[type-arg]
    queryset = Article.objects.order_by("id")
    serializer_class = ArticleSerializer

    def perform_create(self, serializer):  # type: ignore[no-untyped-def]
        user = self.request.user
        serializer.save(author=user if user.is_authenticated else None)


class RenameArticleViewSet(MessengerMixin, viewsets.ModelViewSet):  # type: ignore[type-arg]
    queryset = Article.objects.order_by("id")
    serializer_class = ArticleSerializer
    messenger = "input"
    input_serializer_class = RenameArticleSerializer
    message_class = RenameArticle


class PrivatePingViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Ping
    authentication_classes = [authentication.BasicAuthentication]
    permission_classes = [permissions.IsAuthenticated]


class AdminPingViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Ping
    permission_classes = [permissions.IsAdminUser]


class ThrottledPingThrottle(AnonRateThrottle):
    rate = "1/min"


class ThrottledPingViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Ping
    throttle_classes = [ThrottledPingThrottle]


class DelayedPingView(APIView):
    """A hand-written view dispatching from code: ``bus.dispatch(..., delay=...)``."""

    def post(self, request: Request) -> Response:
        serializer = PingSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        delay = timedelta(milliseconds=int(request.query_params.get("delay_ms", "500")))
        envelope = bus.dispatch(Ping(**serializer.validated_data), delay=delay)
        return Response(status=202, headers={"Messenger-Message-Id": str(envelope.message_id)})


class ShoutViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Shout


class TrackedPingViewSet(MessengerViewSet):
    """Tracked writes (a status Location), with an optional Idempotency-Key."""

    serializer_class = PingSerializer
    message_class = Ping
    messenger_track = True
    messenger_idempotency = "optional"
    authentication_classes = [authentication.BasicAuthentication, authentication.SessionAuthentication]


class KeyedPingViewSet(MessengerViewSet):
    """An Idempotency-Key is required."""

    serializer_class = PingSerializer
    message_class = Ping
    messenger_idempotency = "required"
    authentication_classes = [authentication.BasicAuthentication, authentication.SessionAuthentication]


class TrackedShoutViewSet(MessengerViewSet):
    """Tracked fan-out: Shout has two handlers."""

    serializer_class = PingSerializer
    message_class = Shout
    messenger_track = True


class TrackedFlakyViewSet(MessengerViewSet):
    """Tracked writes whose handler fails until it is fixed."""

    serializer_class = PingSerializer
    message_class = Flaky
    messenger_track = True
    authentication_classes = [authentication.BasicAuthentication]
