"""View mixins that dispatch writes through the bus instead of saving them.

``MessengerMixin`` gives a ``ModelViewSet`` (or any GenericAPIView with DRF's
``perform_*`` hooks) the command side of CQRS: POST, PUT, PATCH and DELETE validate,
dispatch and answer 202 with an empty body and a ``Messenger-Message-Id`` header;
GET stays ordinary DRF. ``MessengerCreateMixin``, ``MessengerUpdateMixin`` and
``MessengerDestroyMixin`` are its parts, for other compositions. A client that asks for HTML
gets DRF's browsable page of the answer instead (browsable.py), and OPTIONS and the browsable
forms describe the serializer each write validates (metadata.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urlencode

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.template.response import SimpleTemplateResponse
from django.urls import reverse
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from . import browsable, idempotency, metadata, tracking
from .conf import IDEMPOTENCY_MODES, messenger_settings
from .envelope import Envelope
from .exceptions import BrokerUnavailable, IdempotencyKeyMissing, RequestTooLarge
from .parsing import guard_parser, too_many_query_fields
from .persisters import MessengerPersister, apply_changes, build_new, dispatched_type, model_of
from .stamps import HandledStamp, TrackStamp

MESSAGE_ID_HEADER = "Messenger-Message-Id"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The URL name (in the ``django_messenger`` namespace) of the status resource.
STATUS_URL_NAME = "django_messenger:message-status"


class _Replay(Exception):
    """An ``Idempotency-Key`` seen before: its stored answer is the response."""

    def __init__(self, answer: idempotency.Answer) -> None:
        super().__init__("replayed")
        self.answer = answer


def replayed_response(answer: idempotency.Answer) -> HttpResponse:
    """The stored answer, as it was first sent, marked ``Idempotent-Replayed: true``."""
    response = HttpResponse(answer.body, status=answer.status_code)
    del response["Content-Type"]
    for name, value in answer.headers.items():
        response[name] = value
    response["Content-Length"] = str(len(answer.body))
    response[idempotency.REPLAYED_HEADER] = "true"
    return response


class MessengerViewMixin:
    """What every messenger view shares: its settings, serializer wiring and response."""

    #: ``True`` dispatches the resource object; ``"input"`` the DTO validated by
    #: ``input_serializer_class``.
    messenger: ClassVar[bool | str] = True
    #: The status of an answered write.
    messenger_status: ClassVar[int] = 202
    #: Return the synchronous handler's result (serialized by the view's serializer).
    messenger_output: ClassVar[bool] = False
    #: The class built from validated data (``message_class(**validated_data)``).
    message_class: ClassVar[type | None] = None
    #: The serializer that validates the input DTO when ``messenger = "input"``.
    input_serializer_class: ClassVar[type[serializers.BaseSerializer[Any]] | None] = None
    persister_class: ClassVar[type[MessengerPersister]] = MessengerPersister
    #: Answer writes with a ``Location`` of their status resource; None follows ``MESSENGER["STATUS"]``.
    messenger_track: ClassVar[bool | None] = None
    #: ``"optional"`` or ``"required"`` honours ``Idempotency-Key``; None follows
    #: ``MESSENGER["IDEMPOTENCY"]``; False (or ``""``) turns it off for this view.
    messenger_idempotency: ClassVar[str | bool | None] = None

    request: Request
    kwargs: dict[str, Any]
    action: str | None

    @classmethod
    def as_view(cls, *args: Any, **kwargs: Any) -> Any:
        """The view, exempt from ``ATOMIC_REQUESTS``: it writes nothing itself."""
        view = super().as_view(*args, **kwargs)  # type: ignore[misc]
        for alias in connections:
            view = transaction.non_atomic_requests(using=alias)(view)
        return view

    def handle_exception(self, exc: Exception) -> Any:
        """DRF's, plus a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` as a JSON 413, and a 503 with its id."""
        if isinstance(exc, _Replay):
            return replayed_response(exc.answer)
        if isinstance(exc, RequestDataTooBig):
            exc = RequestTooLarge()
        try:
            response = super().handle_exception(exc)  # type: ignore[misc]
        except BaseException:
            self._release_idempotency_key()  # an unhandled error: the key stays usable
            raise
        if isinstance(exc, BrokerUnavailable) and exc.message_id is not None:
            # The broker may have the message after all: the client's retry and the logs share its id.
            response[MESSAGE_ID_HEADER] = str(exc.message_id)
        return response

    # -- persister and serializer ---------------------------------------------------

    @property
    def messenger_persister(self) -> MessengerPersister:
        persister = self.__dict__.get("_messenger_persister")
        if persister is None:
            persister = self.persister_class(request=self.request)
            persister.track = self.messenger_tracked()
            self.__dict__["_messenger_persister"] = persister
        return persister

    @property
    def messenger_envelope(self) -> Envelope | None:
        """The envelope this request dispatched, if any."""
        persister = self.__dict__.get("_messenger_persister")
        return persister.envelope if persister is not None else None

    def messenger_tracked(self) -> bool:
        """Whether this view's writes are tracked (``messenger_track``, else ``MESSENGER["STATUS"]``)."""
        if self.messenger_track is None:
            return messenger_settings.STATUS
        return bool(self.messenger_track)

    def messenger_idempotency_mode(self) -> str:
        """``"optional"``, ``"required"`` or ``""`` (off) for this view."""
        mode = self.messenger_idempotency
        if mode is None:
            return messenger_settings.IDEMPOTENCY
        if mode is True:
            return "optional"
        return str(mode) if mode in IDEMPOTENCY_MODES else ""

    def messenger_lookup(self) -> dict[str, str]:
        return {key: str(value) for key, value in self.kwargs.items()}

    def get_messenger_serializer_class(self) -> type[serializers.BaseSerializer[Any]]:
        if self.messenger == "input":
            if self.input_serializer_class is None:
                raise AssertionError(
                    f"{type(self).__name__} sets messenger = 'input' but no input_serializer_class."
                )
            return self.input_serializer_class
        return self.get_serializer_class()  # type: ignore[attr-defined,no-any-return]

    def get_messenger_serializer(self, *args: Any, **kwargs: Any) -> serializers.BaseSerializer[Any]:
        """The write serializer, whose ``save(**extra)`` dispatches instead of saving."""
        kwargs.setdefault("context", self.get_serializer_context())  # type: ignore[attr-defined]
        serializer = self.get_messenger_serializer_class()(*args, **kwargs)
        self.attach_persister(serializer)
        return serializer

    # -- the browsable API and OPTIONS (browsable.py, metadata.py) --------------------------

    def get_messenger_form_serializer(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """The serializer a ``method`` request fills in, for forms and OPTIONS, when it is not
        ``get_serializer()``'s: ``input_serializer_class`` for a ``messenger = "input"`` write (a
        DELETE's included, which validates a body); None otherwise."""
        mixin, action = MESSENGER_WRITES.get(method.upper(), ((), None))
        if self.messenger != "input" or not isinstance(self, mixin):
            return None
        routed = getattr(self, "action_map", None)  # a viewset's route: its own @action keeps its serializer
        if routed is not None and routed.get(method.lower()) != action:
            return None
        kwargs.pop("instance", None)  # an input DTO is built from the request alone
        return self.get_messenger_serializer(*args, **kwargs)

    @contextlib.contextmanager
    def describing_writes(self) -> Iterator[None]:
        """While DRF's browsable API builds its forms, or OPTIONS describes the writes (both set
        ``self.request`` to a copy with the write's method), ``get_serializer()`` builds the
        serializer that write validates (:meth:`get_messenger_form_serializer`)."""
        if self.messenger != "input":
            yield
            return
        own = self.get_serializer  # type: ignore[attr-defined]

        def get_serializer(*args: Any, **kwargs: Any) -> Any:
            found = self.get_messenger_form_serializer(self.request.method or "", *args, **kwargs)
            return found if found is not None else own(*args, **kwargs)

        self.__dict__["get_serializer"] = get_serializer  # an instance attribute, removed below
        try:
            yield
        finally:
            del self.__dict__["get_serializer"]

    def get_renderers(self) -> list[BaseRenderer]:
        """The view's renderers, a browsable API renderer showing what a write did (browsable.py)."""
        return [browsable.for_messenger(renderer) for renderer in super().get_renderers()]  # type: ignore[misc]

    def options(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        """DRF's OPTIONS, describing the fields each write validates (metadata.py)."""
        if self.metadata_class is None:  # type: ignore[attr-defined]
            return super().options(request, *args, **kwargs)  # type: ignore[misc]
        metadata_class = metadata.for_messenger(self.metadata_class)  # type: ignore[attr-defined]
        found = metadata_class().determine_metadata(request, self)  # type: ignore[arg-type]
        return Response(found, status=200)

    def attach_persister(self, serializer: serializers.BaseSerializer[Any]) -> None:
        """Make ``serializer.save()`` hand its object to the persister."""
        cls = dispatched_type(self, type(serializer))

        def create(validated_data: dict[str, Any]) -> Any:
            obj = build_new(serializer, validated_data, cls)
            self.messenger_persister.persist(
                obj, operation=self.action or "create", fields=validated_data, lookup=self.messenger_lookup()
            )
            return obj

        def update(instance: Any, validated_data: dict[str, Any]) -> Any:
            obj = (
                apply_changes(instance, validated_data)
                if cls is not None and cls is model_of(serializer)  # the resource, changed
                else build_new(serializer, validated_data, cls)
            )
            self.messenger_persister.persist(
                obj, operation=self.action or "update", fields=validated_data, lookup=self.messenger_lookup()
            )
            return obj

        serializer.create = create  # type: ignore[method-assign]
        serializer.update = update  # type: ignore[method-assign]

    # -- request body -----------------------------------------------------------------

    def get_parsers(self) -> list[BaseParser]:
        """The view's parsers, each refusing hostile bodies with a JSON 4xx (parsing.py)."""
        return [guard_parser(parser) for parser in super().get_parsers()]  # type: ignore[misc]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """DRF's checks, then a write's body parsed at once: an unreadable body is never a 202,
        even where the action ignores it (a DELETE of a resource)."""
        try:
            super().initial(request, *args, **kwargs)  # type: ignore[misc]
        except TooManyFieldsSent as exc:  # request.GET, read by content negotiation: no HTML 400
            raise ParseError(too_many_query_fields()) from exc
        method = (request.method or "").upper()
        if method in WRITE_METHODS and hasattr(self, method.lower()):  # not for a 405
            request.data  # noqa: B018  (parses, or raises ParseError / UnsupportedMediaType)
            self._claim_idempotency_key(request, method)

    # -- Idempotency-Key ----------------------------------------------------------------

    def _claim_idempotency_key(self, request: Request, method: str) -> None:
        """Claim the request's ``Idempotency-Key`` before anything is dispatched (idempotency.py).

        Raises the 400, 409 or 422 of the key, or :class:`_Replay` with the first answer.
        """
        mode = self.messenger_idempotency_mode()
        if not mode:
            return
        key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
        if key is None:
            if mode == "required":
                raise IdempotencyKeyMissing()
            return
        owner = tracking.owner_of(getattr(request, "user", None))
        seen = idempotency.fingerprint(method, request.get_full_path(), request.data)
        claimed = idempotency.store().claim(owner, key, seen)
        if isinstance(claimed, idempotency.Answer):
            raise _Replay(claimed)
        self.__dict__["_messenger_claim"] = claimed

    def _release_idempotency_key(self) -> None:
        claim = self.__dict__.pop("_messenger_claim", None)
        if claim is not None:
            claim.release()

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        """DRF's; then a claimed key keeps a 2xx answer for its replays, or is released for a retry."""
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        claim = self.__dict__.pop("_messenger_claim", None)
        if claim is None:
            return response
        if not 200 <= response.status_code < 300:
            claim.release()
            return response
        try:
            if isinstance(response, SimpleTemplateResponse):
                response.render()
            headers = {name: response[name] for name in idempotency.KEPT_HEADERS if name in response}
            body = b"" if getattr(response, "streaming", False) else bytes(response.content)
            if getattr(response, "messenger_empty", False):  # a browsable page: replay the API's answer
                headers.pop("Content-Type", None)
                body = b""
            claim.finish(idempotency.Answer(response.status_code, headers, body))
        except BaseException:
            claim.release()
            raise
        return response

    # -- response ---------------------------------------------------------------------

    def messenger_status_location(self, envelope: Envelope) -> str | None:
        """The ``Location`` of ``envelope``'s status resource, when the dispatch was tracked.

        A message handled synchronously has its status recorded here: no worker will.
        """
        stamp = envelope.last(TrackStamp)
        if stamp is None:
            return None
        handled = [handled.handler_name for handled in envelope.all(HandledStamp)]
        if handled:
            tracking.record_handled(envelope.message_id, stamp, handled)
        path = reverse(STATUS_URL_NAME, kwargs={"message_id": envelope.message_id})
        token = urlencode({"token": tracking.make_token(envelope.message_id, stamp.owner)})
        return self.request.build_absolute_uri(f"{path}?{token}")

    def messenger_response(self) -> HttpResponseBase:
        """202 (``messenger_status``) with an empty body, or the synchronous handler's output."""
        envelope = self.messenger_envelope
        headers = {MESSAGE_ID_HEADER: str(envelope.message_id)} if envelope is not None else {}
        location = self.messenger_status_location(envelope) if envelope is not None else None
        if location is not None:
            headers["Location"] = location
        if self.messenger_output and envelope is not None:
            handled = envelope.last(HandledStamp)
            if handled is not None and isinstance(handled.result, HttpResponseBase):
                for name, value in headers.items():
                    handled.result[name] = value
                return handled.result
            if handled is not None and handled.result is not None:
                data = self.get_serializer(handled.result).data  # type: ignore[attr-defined]
                return Response(data, status=self.messenger_status, headers=headers)
        if browsable.asks_for_html(self.request, getattr(self, "format_kwarg", None)):
            # A person at DRF's browsable API: its page, showing this answer's status and headers.
            page = Response(None, status=self.messenger_status, headers=headers)
            page.messenger_empty = True  # type: ignore[attr-defined]  # what API clients get: no body
            return page
        response = HttpResponse(status=self.messenger_status, headers=headers)
        del response["Content-Type"]
        response["Content-Length"] = "0"
        return response


class MessengerCreateMixin(MessengerViewMixin):
    """POST: validate, dispatch (``perform_create`` -> ``serializer.save()``), answer 202."""

    def create(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        serializer = self.get_messenger_serializer(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        return self.messenger_response()

    def perform_create(self, serializer: serializers.BaseSerializer[Any]) -> None:
        serializer.save()


class MessengerUpdateMixin(MessengerViewMixin):
    """PUT and PATCH: the instance with its changes (or the input DTO) is dispatched, not saved."""

    def update(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        partial = kwargs.pop("partial", False)
        instance = self.get_object()  # type: ignore[attr-defined]  # 404 and object permissions first
        if self.messenger == "input":
            serializer = self.get_messenger_serializer(data=self.request.data, partial=partial)
        else:
            serializer = self.get_messenger_serializer(instance, data=self.request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        self.perform_update(serializer)
        return self.messenger_response()

    def partial_update(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        kwargs["partial"] = True
        return self.update(request, *args, **kwargs)

    def perform_update(self, serializer: serializers.BaseSerializer[Any]) -> None:
        serializer.save()


class MessengerDestroyMixin(MessengerViewMixin):
    """DELETE: the instance (or the input DTO) is dispatched with a RemoveStamp."""

    def destroy(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        instance = self.get_object()  # type: ignore[attr-defined]
        self.perform_destroy(instance)
        return self.messenger_response()

    def perform_destroy(self, instance: Any) -> None:
        obj = instance
        if self.messenger == "input":
            serializer = self.get_messenger_serializer(data=self.request.data)
            serializer.is_valid(raise_exception=True)
            obj = build_new(serializer, serializer.validated_data, dispatched_type(self, type(serializer)))
        self.messenger_persister.remove(
            obj, operation=self.action or "destroy", lookup=self.messenger_lookup()
        )


class MessengerMixin(MessengerCreateMixin, MessengerUpdateMixin, MessengerDestroyMixin):
    """POST, PUT, PATCH and DELETE dispatched through the bus; reads stay DRF's."""


#: The mixin and the viewset action that dispatch each write method.
MESSENGER_WRITES: dict[str, tuple[type, str]] = {
    "POST": (MessengerCreateMixin, "create"),
    "PUT": (MessengerUpdateMixin, "update"),
    "PATCH": (MessengerUpdateMixin, "partial_update"),
    "DELETE": (MessengerDestroyMixin, "destroy"),
}
