"""The status resource of tracked writes: ``GET …/messages/<message_id>/`` (docs/async-http.md)."""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework import permissions, serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import tracking

#: Seconds a client is asked to wait before it polls a pending status again.
POLL_AFTER = 1


class MessageStatusSerializer(serializers.Serializer):
    """The body of a status resource (what OpenAPI documents; the view writes the same keys)."""

    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["pending", "handled", "failed"])
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    error = serializers.CharField(required=False, help_text="Only when failed: where an operator finds it.")


class MessageStatusView(APIView):
    """200 with ``{"id", "status", "created_at", "updated_at"}`` (+ ``"error"`` when failed), or 404.

    Only the sender (an anonymous one: with the ``token`` of its ``Location``) and staff read a
    status; anyone else gets the 404 of an unknown id. The project's authentication classes apply;
    reading needs no further permission, the ownership rule is the permission.
    """

    permission_classes = [permissions.AllowAny]
    http_method_names = ["get", "head", "options"]
    serializer_class = MessageStatusSerializer

    def get_serializer(self, *args: Any, **kwargs: Any) -> MessageStatusSerializer:
        """The body's serializer, for schema generators (drf-spectacular asks an APIView for it)."""
        return self.serializer_class(*args, **kwargs)

    def get(self, request: Request, message_id: uuid.UUID, *args: Any, **kwargs: Any) -> Response:
        token = str(request.query_params.get("token", ""))
        found = tracking.read(message_id, user=request.user, token=token)
        if found is None:
            raise NotFound()
        headers = {"Cache-Control": "no-store"}
        if found.status == "pending":
            headers["Retry-After"] = str(POLL_AFTER)
        return Response(found.as_json(), headers=headers)
