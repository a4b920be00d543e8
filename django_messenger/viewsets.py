"""Ready-made messenger viewsets."""

from __future__ import annotations

from rest_framework import viewsets

from .mixins import MessengerCreateMixin


class MessengerViewSet(MessengerCreateMixin, viewsets.GenericViewSet):  # type: ignore[misc]
    """A command endpoint: POST validates ``serializer_class`` and dispatches ``message_class(**data)``."""
