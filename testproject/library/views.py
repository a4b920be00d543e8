from rest_framework import viewsets

from django_messenger.mixins import MessengerMixin

from .models import Book
from .serializers import BookSerializer


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
