from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers, viewsets

from django_messenger.mixins import MessengerMixin

from .models import Book
from .serializers import BookSerializer

#: DRF's answer to an unknown id, which drf-spectacular leaves out of a read's schema.
NOT_FOUND = OpenApiResponse(
    response=inline_serializer("NotFound", fields={"detail": serializers.CharField()}),
    description="No book has this id.",
)


@extend_schema_view(retrieve=extend_schema(responses={200: BookSerializer, 404: NOT_FOUND}))
class BookViewSet(MessengerMixin, viewsets.ModelViewSet):
    """Reads are plain DRF; every write is dispatched to ``library.handlers`` and answers 202."""

    queryset = Book.objects.order_by("id")
    serializer_class = BookSerializer
    # The asynchronous HTTP contract (docs/async-http.md): each write's 202 carries a Location
    # to poll (messages/<id>/), and a retried POST with the same Idempotency-Key is not sent twice.
    messenger_track = True
    messenger_idempotency = "optional"

    def perform_create(self, serializer: BookSerializer) -> None:
        # save() dispatches the unsaved Book; the extra field travels with it.
        user = self.request.user
        serializer.save(added_by=user if user.is_authenticated else None)
