"""OPTIONS of messenger views: the fields each write takes.

DRF's ``SimpleMetadata`` describes the ``POST`` and ``PUT`` fields of ``get_serializer()``, the
view's resource serializer. A ``messenger = "input"`` write validates ``input_serializer_class``
instead, and its DELETE takes a body too. A messenger view answers OPTIONS with its
``metadata_class`` (``DEFAULT_METADATA_CLASS``, or its own) with :class:`MessengerMetadata`
below it (:func:`for_messenger`), which describes the fields the writes validate, a DELETE's
included. A metadata class that is not a ``SimpleMetadata`` is left as it is.

This module knows views only by ``describing_writes()`` and ``get_messenger_form_serializer()``
(mixins.py), so that the views can use it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.metadata import BaseMetadata, SimpleMetadata
from rest_framework.request import Request, clone_request


def _describing_writes(view: Any) -> contextlib.AbstractContextManager[None]:
    describing = getattr(view, "describing_writes", None)
    return describing() if describing is not None else contextlib.nullcontext()


class MessengerMetadata(SimpleMetadata):
    """DRF's ``SimpleMetadata``, with the fields that messenger writes validate."""

    def determine_actions(self, request: Request, view: Any) -> dict[str, Any]:
        with _describing_writes(view):
            actions: dict[str, Any] = super().determine_actions(request, view)
            if "DELETE" in view.allowed_methods:
                delete = self._delete_action(request, view)
                if delete is not None:
                    actions["DELETE"] = delete
        return actions

    def _delete_action(self, request: Request, view: Any) -> dict[str, Any] | None:
        """The fields of a DELETE that validates a body, when the user may send it; else None."""
        find = getattr(view, "get_messenger_form_serializer", None)
        if find is None:
            return None
        view.request = clone_request(request, "DELETE")
        try:
            serializer = find("DELETE")
            if serializer is None:
                return None
            if hasattr(view, "check_permissions"):
                view.check_permissions(view.request)
            if hasattr(view, "get_object"):
                view.get_object()
        except (exceptions.APIException, PermissionDenied, Http404):
            return None
        finally:
            view.request = request
        return self.get_serializer_info(serializer)


#: The messenger counterpart of each metadata class met so far.
_MIXED: dict[type[BaseMetadata], type[BaseMetadata]] = {}


def for_messenger(metadata_class: type[BaseMetadata]) -> type[BaseMetadata]:
    """``metadata_class`` with :class:`MessengerMetadata` below it (its own overrides asked first)."""
    if not issubclass(metadata_class, SimpleMetadata) or issubclass(metadata_class, MessengerMetadata):
        return metadata_class
    if metadata_class is SimpleMetadata:
        return MessengerMetadata
    mixed = _MIXED.get(metadata_class)
    if mixed is None:
        name = f"Messenger{metadata_class.__name__}"
        attributes = {"__module__": metadata_class.__module__}
        mixed = _MIXED.setdefault(metadata_class, type(name, (metadata_class, MessengerMetadata), attributes))
    return mixed
