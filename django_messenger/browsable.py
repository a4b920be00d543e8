"""The browsable API of messenger views: a dispatched write shows what happened.

DRF's ``BrowsableAPIRenderer`` renders the page a person sees in a browser. A messenger write
answers API clients with an empty 202, which a browser would show as a blank page (and which the
raw-data form's script would leave by loading the URL again). A messenger view therefore swaps
each ``BrowsableAPIRenderer`` of its own (a project's subclass included; not DRF's
``AdminRenderer``) for a subclass of it with :class:`MessengerBrowsableAPIRenderer` below, so that:

- a write whose client asked for HTML (an ``Accept`` naming ``text/html``, or the format
  override) renders DRF's usual page: the status (``202 Accepted``), ``Messenger-Message-Id`` and,
  for a tracked write, the status resource's ``Location`` as a link (:func:`asks_for_html`);
  every other client still gets the empty body;
- the HTML and raw-data forms of a ``messenger = "input"`` write are built from
  ``input_serializer_class`` (the view says which serializer a write validates:
  ``get_messenger_form_serializer``), and a DELETE that validates a body gets a form of its own
  (``django_messenger/browsable_api.html``) instead of DRF's bodiless DELETE button.

This module knows views only by those two methods, so that the views (mixins.py) can use it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from rest_framework.renderers import AdminRenderer, BaseRenderer, BrowsableAPIRenderer
from rest_framework.request import Request, override_method
from rest_framework.settings import api_settings

#: The page of :class:`MessengerBrowsableAPIRenderer`: DRF's ``rest_framework/api.html`` (a
#: project's override of it included), plus the form of a DELETE that takes a body.
TEMPLATE = "django_messenger/browsable_api.html"
#: Media types by which a client asks for the browsable page explicitly.
HTML_MEDIA_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def describing_writes(view: Any) -> contextlib.AbstractContextManager[None]:
    """The view's ``describing_writes()`` (mixins.py): while it lasts, ``view.get_serializer()``
    builds the serializer each write validates. A view without it stays as it is."""
    describing = getattr(view, "describing_writes", None)
    return describing() if describing is not None else contextlib.nullcontext()


def form_serializer(view: Any, method: str) -> Any:
    """The serializer a ``method`` request's form fills in when it is not ``get_serializer()``'s
    (the input serializer of a ``messenger = "input"`` write), or None."""
    find = getattr(view, "get_messenger_form_serializer", None)
    return find(method) if find is not None else None


class MessengerBrowsableAPIRenderer(BrowsableAPIRenderer):
    """DRF's browsable API, showing messenger writes as they behave."""

    template = TEMPLATE

    def get_rendered_html_form(self, data: Any, view: Any, method: str, request: Request) -> Any:
        with describing_writes(view):
            return super().get_rendered_html_form(data, view, method, request)

    def get_raw_data_form(self, data: Any, view: Any, method: str, request: Request) -> Any:
        with describing_writes(view):
            return super().get_raw_data_form(data, view, method, request)

    def get_context(self, data: Any, accepted_media_type: Any, renderer_context: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context(data, accepted_media_type, renderer_context)
        response = renderer_context["response"]
        if data is None:
            # The answer API clients get has no body, hence no Content-Type either.
            context["response_headers"].pop("Content-Type", None)
        view, request = renderer_context["view"], renderer_context["request"]
        context["messenger_delete_form"] = None
        context["messenger_raw_data_delete_form"] = None
        editable = response.status_code != 403  # as DRF's display_edit_forms
        if self.template == TEMPLATE and editable and self._delete_takes_body(view, request):
            # DRF's DELETE button sends no body; this page's DELETE form sends one.
            context["delete_form"] = None
            context["messenger_delete_form"] = self._delete_form(data, view, request)
            context["messenger_raw_data_delete_form"] = self.get_raw_data_form(data, view, "DELETE", request)
        return context

    def _delete_takes_body(self, view: Any, request: Request) -> bool:
        if "DELETE" not in view.allowed_methods:
            return False
        with override_method(view, request, "DELETE"):
            return form_serializer(view, "DELETE") is not None

    def _delete_form(self, data: Any, view: Any, request: Request) -> Any:
        """The HTML form of a DELETE that takes a body, as DRF builds a POST's."""
        existing = getattr(data, "serializer", None)
        instance = getattr(existing, "instance", None) if not getattr(existing, "many", False) else None
        if request.method != "DELETE":
            existing = None  # the page of another request: a fresh form
        with override_method(view, request, "DELETE") as delete:
            if not self.show_form_for_method(view, "DELETE", delete, instance):
                return None
            if not any(_is_form(parser.media_type) for parser in view.parser_classes):
                return None
            serializer = existing if existing is not None else form_serializer(view, "DELETE")
            if serializer is None:
                return None
            return self.render_form_for_serializer(serializer)


def _is_form(media_type: str) -> bool:
    base = media_type.split(";", 1)[0].strip().lower()
    return base in ("application/x-www-form-urlencoded", "multipart/form-data")


#: The messenger counterpart of each browsable renderer class met so far.
_MIXED: dict[type[BrowsableAPIRenderer], type[BrowsableAPIRenderer]] = {}


def _messenger_class(renderer_class: type[BrowsableAPIRenderer]) -> type[BrowsableAPIRenderer]:
    """``renderer_class`` with :class:`MessengerBrowsableAPIRenderer` below it, so that a
    project's own overrides are asked first."""
    if renderer_class is BrowsableAPIRenderer:
        return MessengerBrowsableAPIRenderer
    mixed = _MIXED.get(renderer_class)
    if mixed is None:
        name = f"Messenger{renderer_class.__name__}"
        attributes = {"__module__": renderer_class.__module__}
        mixed = type(name, (renderer_class, MessengerBrowsableAPIRenderer), attributes)
        mixed = _MIXED.setdefault(renderer_class, mixed)
    return mixed


def for_messenger(renderer: BaseRenderer) -> BaseRenderer:
    """``renderer``, or its messenger counterpart when it is a browsable API renderer."""
    if not isinstance(renderer, BrowsableAPIRenderer) or isinstance(renderer, AdminRenderer):
        return renderer
    if isinstance(renderer, MessengerBrowsableAPIRenderer):
        return renderer
    return _messenger_class(type(renderer))()


def asks_for_html(request: Request, format_kwarg: str | None) -> bool:
    """Whether the request negotiated a messenger browsable renderer *and* asked for it by name:
    a format (``?format=api``, a ``.api`` suffix) or an ``Accept`` naming ``text/html``. A client
    that sends no ``Accept`` (or ``*/*``) gets the API's answer even where a project lists the
    browsable renderer first."""
    renderer = getattr(request, "accepted_renderer", None)
    if not isinstance(renderer, MessengerBrowsableAPIRenderer):
        return False
    requested = format_kwarg or request.query_params.get(api_settings.URL_FORMAT_OVERRIDE or "")
    if requested:
        return requested == renderer.format
    accept = request.META.get("HTTP_ACCEPT", "")
    return any(item.split(";", 1)[0].strip().lower() in HTML_MEDIA_TYPES for item in accept.split(","))
