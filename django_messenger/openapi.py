"""OpenAPI for messenger views, through drf-spectacular's own extension mechanism.

``apps.ready()`` imports this module when both ``drf_spectacular`` and ``django_messenger`` are
installed; importing it registers :class:`MessengerViewExtension`, an ``OpenApiViewExtension``
that matches every view built on ``MessengerViewMixin``. While drf-spectacular generates a
schema, the extension hands it a subclass of the view whose schema class is the view's own
(``DEFAULT_SCHEMA_CLASS``, or the view's ``schema``, or what ``@extend_schema`` made of it) with
:class:`MessengerAutoSchema` mixed in below it. The user writes nothing, and anything they
annotate with ``@extend_schema`` still wins over what messenger documents.

A messenger write is documented as it behaves (docs/openapi.md): ``messenger_status`` (202) with
no body and a ``Messenger-Message-Id`` header, or the view's serializer when ``messenger_output``
is on and the message is handled in the request (routed to ``sync``); 400 with DRF's error body;
404 where the write looks an object up; 413; 415; 503 with ``Retry-After``. For
``messenger = "input"`` the request body is ``input_serializer_class``, a DELETE's included.
:meth:`MessengerAutoSchema.messenger_responses` and
:meth:`MessengerAutoSchema.messenger_response_headers` are the places to add further answers.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from drf_spectacular.extensions import OpenApiViewExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent, build_serializer_context, get_class
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.views import APIView

from . import idempotency
from .conf import SYNC_TRANSPORT, messenger_settings
from .message_types import type_name
from .mixins import (
    MESSAGE_ID_HEADER,
    MessengerCreateMixin,
    MessengerDestroyMixin,
    MessengerUpdateMixin,
    MessengerViewMixin,
)
from .persisters import dispatched_type
from .routing import transport_name_for
from .status import MessageStatusSerializer

#: The action a write method runs, for views that are not viewsets.
ACTIONS = {"POST": "create", "PUT": "update", "PATCH": "partial_update", "DELETE": "destroy"}
#: The mixin that gives a view each messenger action.
ACTION_MIXINS: dict[str, type] = {
    "create": MessengerCreateMixin,
    "update": MessengerUpdateMixin,
    "partial_update": MessengerUpdateMixin,
    "destroy": MessengerDestroyMixin,
}
#: Actions that look their object up first (``get_object()``), so may answer 404.
LOOKUP_ACTIONS = frozenset({"update", "partial_update", "destroy"})

#: The component of a ``{"detail": "..."}`` error body.
ERROR_COMPONENT = "MessengerError"
#: The component of DRF's validation error body.
VALIDATION_ERROR_COMPONENT = "MessengerValidationError"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error: `detail` says what happened and what the client can do.",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Django REST framework's error body. Invalid data: each field name maps to its errors "
        "(a list of messages, or an object of the same shape for a nested serializer or a list "
        "field) and `non_field_errors` lists the errors of the whole object. A body that cannot "
        "be read, or data no handler accepts: `detail`."
    ),
    "properties": {
        "detail": {"type": "string"},
        "non_field_errors": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": {"anyOf": [{"type": "array"}, {"type": "object"}, {"type": "string"}]},
}


class MessengerAutoSchema(AutoSchema):
    """drf-spectacular's ``AutoSchema``, documenting messenger writes as they behave.

    Reads, and writes a messenger view does not dispatch (its own ``@action``\\ s), are left to
    the schema class below this one.
    """

    # -- which operations are messenger writes --------------------------------------------

    def messenger_action(self) -> str | None:
        """The messenger action this operation runs (``"create"``...), or None for any other."""
        if self.method not in ACTIONS:
            return None
        action = getattr(self.view, "action", None) or ACTIONS[self.method]
        mixin = ACTION_MIXINS.get(action)
        return action if mixin is not None and isinstance(self.view, mixin) else None

    def _messenger_view(self) -> MessengerViewMixin:
        assert isinstance(self.view, MessengerViewMixin)
        return self.view

    def _dispatches_input(self) -> bool:
        return self.messenger_action() is not None and self._messenger_view().messenger == "input"

    # -- request ----------------------------------------------------------------------------

    def get_request_serializer(self) -> Any:
        """``input_serializer_class`` for ``messenger = "input"``, else the schema below's choice."""
        if self._dispatches_input():
            view = self._messenger_view()
            assert view.input_serializer_class is not None  # system check E006 otherwise
            return view.input_serializer_class(context=build_serializer_context(view))
        return super().get_request_serializer()

    def _get_request_body(self, direction: str = "request") -> Any:
        """drf-spectacular documents bodies of POST, PUT and PATCH only; a DELETE of
        ``messenger = "input"`` validates and dispatches its body too, so it gets one."""
        if self.method == "DELETE" and self._dispatches_input():
            self.method = "POST"  # read the body as a full (not partial) one, as the view does
            try:
                return super()._get_request_body(direction)
            finally:
                self.method = "DELETE"
        return super()._get_request_body(direction)

    # -- responses --------------------------------------------------------------------------

    def get_response_serializers(self) -> Any:
        """The answers of a messenger write (:meth:`messenger_responses`), by status code."""
        if self.messenger_action() is None:
            return super().get_response_serializers()
        return {str(code): response for code, response in self.messenger_responses().items()}

    def get_override_parameters(self) -> list[Any]:
        """The schema below's parameters, plus the response headers of a messenger write."""
        parameters = list(super().get_override_parameters())
        if self.messenger_action() is not None:
            parameters += self.messenger_response_headers()
        return parameters

    def messenger_handled_in_request(self) -> bool:
        """Whether the dispatched type is routed to the ``sync`` transport, whose handlers' result
        ``messenger_output`` returns; a type sent to a worker answers with no body. True when the
        view cannot tell its type (system check E006)."""
        view = self._messenger_view()
        message_type = dispatched_type(view, view.get_messenger_serializer_class())
        return message_type is None or transport_name_for(type_name(message_type)) == SYNC_TRANSPORT

    def messenger_success_status(self) -> int:
        return self._messenger_view().messenger_status

    def messenger_responses(self) -> dict[int, OpenApiResponse]:
        """Each status code a messenger write answers, with its body and description."""
        view = self._messenger_view()
        action = self.messenger_action()
        error = self._error_component(ERROR_COMPONENT, ERROR_SCHEMA)
        responses: dict[int, OpenApiResponse] = {}
        if view.messenger_output and self.messenger_handled_in_request():
            responses[self.messenger_success_status()] = OpenApiResponse(
                response=self._get_serializer(),
                description=(
                    "The message was handled in the request: the body is the last handler's result, "
                    "serialized by the view's serializer (empty when the handler returned nothing)."
                ),
            )
        else:
            responses[self.messenger_success_status()] = OpenApiResponse(
                description=(
                    "Accepted: the message was dispatched (confirmed by the broker, or handled "
                    "synchronously). No body; `Messenger-Message-Id` identifies the message."
                )
            )
        responses[400] = OpenApiResponse(
            response=self._error_component(VALIDATION_ERROR_COMPONENT, VALIDATION_ERROR_SCHEMA),
            description="Invalid input, or a body that cannot be read: nothing was dispatched.",
        )
        if action in LOOKUP_ACTIONS:
            responses[404] = OpenApiResponse(response=error, description="No such object.")
        responses[413] = OpenApiResponse(
            response=error,
            description=(
                "The request, or the message it makes, is larger than a worker accepts: nothing was sent."
            ),
        )
        responses[415] = OpenApiResponse(
            response=error, description="The request's Content-Type is not one this endpoint reads."
        )
        responses[503] = OpenApiResponse(
            response=error,
            description=(
                "The message broker did not confirm the message in time; it may or may not have been "
                "accepted. Retry after `Retry-After` seconds; `Messenger-Message-Id` identifies the attempt."
            ),
        )
        if view.messenger_idempotency_mode():
            responses[409] = OpenApiResponse(
                response=error,
                description=(
                    "A request with this Idempotency-Key is still being answered: retry after `Retry-After`."
                ),
            )
            responses[422] = OpenApiResponse(
                response=error,
                description="This Idempotency-Key was used with another request (method, path or body).",
            )
        return dict(sorted(responses.items()))

    def messenger_response_headers(self) -> list[OpenApiParameter]:
        """The response headers of a messenger write, each with the status codes that carry it."""
        success = self.messenger_success_status()
        headers = [
            OpenApiParameter(
                MESSAGE_ID_HEADER,
                OpenApiTypes.UUID,
                location=OpenApiParameter.HEADER,
                response=[success],
                required=True,
                description="The id of the dispatched message's envelope (the id its handlers see).",
            ),
            OpenApiParameter(
                MESSAGE_ID_HEADER,
                OpenApiTypes.UUID,
                location=OpenApiParameter.HEADER,
                response=[503],
                description=(
                    "The id of the envelope whose send failed: a retry the broker took after all "
                    "can be told apart by it."
                ),
            ),
        ]
        view = self._messenger_view()
        if view.messenger_tracked():
            headers.append(
                OpenApiParameter(
                    "Location",
                    OpenApiTypes.URI,
                    location=OpenApiParameter.HEADER,
                    response=[success],
                    required=True,
                    description="The status resource of the message (pending, handled or failed): poll it.",
                )
            )
        mode = view.messenger_idempotency_mode()
        if mode:
            headers += [
                OpenApiParameter(
                    idempotency.HEADER,
                    idempotency.KEY_SCHEMA,
                    location=OpenApiParameter.HEADER,
                    required=mode == "required",
                    description="A key of the client's: a retry with the same key and request replays "
                    "the first answer and dispatches nothing (docs/async-http.md).",
                ),
                OpenApiParameter(
                    idempotency.REPLAYED_HEADER,
                    OpenApiTypes.STR,
                    location=OpenApiParameter.HEADER,
                    response=[success],
                    description="`true` when this answer is the replay of an earlier request's.",
                ),
                OpenApiParameter(
                    "Retry-After",
                    OpenApiTypes.INT,
                    location=OpenApiParameter.HEADER,
                    response=[409],
                    required=True,
                    description="Seconds to wait before sending the request again.",
                ),
            ]
        if messenger_settings.RETRY_AFTER > 0:
            headers.append(
                OpenApiParameter(
                    "Retry-After",
                    OpenApiTypes.INT,
                    location=OpenApiParameter.HEADER,
                    response=[503],
                    required=True,
                    description="Seconds to wait before sending the request again.",
                )
            )
        return headers

    def _error_component(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """A reference to the error body ``name``, registered once per schema."""
        component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
        self.registry.register_on_missing(component)
        return component.ref


def with_messenger_schema(schema_class: type[AutoSchema]) -> type[AutoSchema]:
    """``schema_class`` with :class:`MessengerAutoSchema` below it (just above drf-spectacular's
    ``AutoSchema``), so that a user's own schema class and ``@extend_schema`` are asked first."""
    if issubclass(schema_class, MessengerAutoSchema):
        return schema_class
    if schema_class is AutoSchema:
        return MessengerAutoSchema
    return type(f"Messenger{schema_class.__name__}", (schema_class, MessengerAutoSchema), {})


class MessengerViewExtension(OpenApiViewExtension):
    """Every messenger view, documented with :class:`MessengerAutoSchema`."""

    target_class = "django_messenger.mixins.MessengerViewMixin"
    match_subclasses = True

    def view_replacement(self) -> type[APIView]:
        view: type[APIView] = self.target
        attributes: dict[str, Any] = {"__module__": view.__module__, "__doc__": view.__doc__}
        schema = view.schema  # the view's own, or a fresh DEFAULT_SCHEMA_CLASS() (DRF's DefaultSchema)
        if isinstance(schema, AutoSchema):
            attributes["schema"] = _with_messenger(schema)
        # A method annotated with @extend_schema carries its own schema class, which
        # drf-spectacular uses instead of the view's: mix messenger's into it as well.
        for name in ("create", "update", "partial_update", "destroy", "post", "put", "patch", "delete"):
            method = getattr(view, name, None)
            method_schema = get_class(getattr(method, "kwargs", {}).get("schema"))
            if isinstance(method_schema, type) and issubclass(method_schema, AutoSchema):
                attributes[name] = _with_schema(method, with_messenger_schema(method_schema))
        return type(view.__name__, (view,), attributes)


def _with_messenger(schema: AutoSchema) -> AutoSchema:
    """A copy of the schema instance ``schema``, its arguments kept, of messenger's mixed class."""
    mixed = copy.copy(schema)
    mixed.__class__ = with_messenger_schema(type(schema))
    return mixed


def _with_schema(method: Any, schema_class: type[AutoSchema]) -> Any:
    """A copy of the view method ``method`` whose ``kwargs["schema"]`` is ``schema_class``."""

    @functools.wraps(method)
    def replacement(self: Any, *args: Any, **kwargs: Any) -> Any:
        return method(self, *args, **kwargs)

    replacement.kwargs = {**method.kwargs, "schema": schema_class}  # type: ignore[attr-defined]
    return replacement


class MessageStatusViewExtension(OpenApiViewExtension):
    """The status resource of tracked writes: its body, and the 404 of an id the caller may not read."""

    target_class = "django_messenger.status.MessageStatusView"

    def view_replacement(self) -> type[APIView]:
        view: type[APIView] = self.target
        documented = extend_schema(
            responses={
                200: OpenApiResponse(
                    response=MessageStatusSerializer,
                    description="The message's status; poll again after `Retry-After` while pending.",
                ),
                404: OpenApiResponse(
                    response=ERROR_SCHEMA,
                    description="Unknown id, a forged or expired token, or someone else's write.",
                ),
            }
        )
        return documented(
            type(view.__name__, (view,), {"__module__": view.__module__, "__doc__": view.__doc__})
        )
