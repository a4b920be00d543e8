"""The persister: where a messenger view's "save" goes instead of the database.

After API Platform's Messenger data persister. The view hands the object that DRF
would have saved (an unsaved model instance, the resource with its changes applied,
or an input DTO) to :class:`MessengerPersister`, which dispatches it on the bus with
an :class:`OperationStamp` (and a :class:`RemoveStamp` for a destroy).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from rest_framework import serializers
from rest_framework.settings import api_settings
from rest_framework.utils import model_meta

from .bus import MessageBus, bus
from .conf import messenger_settings
from .envelope import Envelope
from .stamps import OperationStamp, RemoveStamp, Stamp, UserStamp

logger = logging.getLogger("django_messenger")


class MessengerPersister:
    """Dispatches written objects instead of saving them; remembers the last envelope."""

    def __init__(self, *, request: Any = None, message_bus: MessageBus = bus) -> None:
        self.request = request
        self.bus = message_bus
        #: The envelope of the last dispatch, for the view's response.
        self.envelope: Envelope | None = None

    def persist(
        self, obj: Any, *, operation: str, fields: Iterable[str] = (), lookup: Mapping[str, str] | None = None
    ) -> Envelope:
        """Dispatch ``obj`` as a create or an update."""
        stamp = OperationStamp(
            operation=operation, fields=tuple(dict.fromkeys(fields)), lookup=dict(lookup or {})
        )
        return self._dispatch(obj, [stamp])

    def remove(
        self, obj: Any, *, operation: str = "destroy", lookup: Mapping[str, str] | None = None
    ) -> Envelope:
        """Dispatch ``obj`` with a :class:`RemoveStamp`."""
        stamps: list[Stamp] = [
            OperationStamp(operation=operation, fields=(), lookup=dict(lookup or {})),
            RemoveStamp(),
        ]
        return self._dispatch(obj, stamps)

    def _dispatch(self, obj: Any, stamps: list[Stamp]) -> Envelope:
        if messenger_settings.USER_STAMP and self.request is not None:
            user = getattr(self.request, "user", None)
            if user is not None and user.is_authenticated:
                stamps.append(UserStamp(user_id=str(user.pk)))
        # A view writes nothing itself, so nothing waits for a commit: the send happens
        # before the answer, and a broker failure is a 503.
        self.envelope = self.bus.dispatch(obj, stamps=stamps, on_commit=False)
        return self.envelope


def _model_of(serializer: serializers.BaseSerializer[Any]) -> type[models.Model] | None:
    if isinstance(serializer, serializers.ModelSerializer):
        return serializer.Meta.model  # type: ignore[no-any-return,unused-ignore]
    return None


def _split_to_many(model: type[models.Model], data: Mapping[str, Any]) -> dict[str, Any]:
    info = model_meta.get_field_info(model)
    return {
        name: value
        for name, value in data.items()
        if not (name in info.relations and info.relations[name].to_many)
    }


def build_new(
    serializer: serializers.BaseSerializer[Any], data: Mapping[str, Any], message_class: type | None
) -> Any:
    """The object a create would have saved: ``message_class(**data)`` or an unsaved model instance.

    To-many relations cannot be set on an unsaved instance: their names are still in the
    operation's ``fields``, and their values are not carried (docs/views.md).
    """
    if message_class is not None:
        try:
            return message_class(**data)
        except TypeError as exc:
            if not getattr(serializer, "partial", False):
                raise
            # A PATCH of an input DTO that needs fields the request did not send.
            raise _missing_fields_error(message_class, data, exc) from exc
    model = _model_of(serializer)
    if model is None:
        raise ImproperlyConfigured(
            f"{type(serializer).__name__} is not a ModelSerializer: set message_class on the view to say "
            f"which message class its validated data builds."
        )
    return model(**_split_to_many(model, data))


def _missing_fields_error(
    message_class: type, data: Mapping[str, Any], exc: TypeError
) -> serializers.ValidationError:
    """A 400 naming the fields ``message_class`` needs that ``data`` lacks; the TypeError goes to the log."""
    logger.info("A partial update could not build %s: %s", message_class.__qualname__, exc)
    required = serializers.Field.default_error_messages["required"]
    missing = _required_parameters(message_class) - set(data)
    if missing:
        return serializers.ValidationError({name: [required] for name in sorted(missing)})
    return serializers.ValidationError(
        {api_settings.NON_FIELD_ERRORS_KEY: ["This request must set every field of the operation."]}
    )


def _required_parameters(message_class: type) -> set[str]:
    """The keyword arguments ``message_class(...)`` cannot do without (empty when unknown)."""
    try:
        parameters = inspect.signature(message_class).parameters.values()
    except (TypeError, ValueError):
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty}


def apply_changes(instance: models.Model, data: Mapping[str, Any]) -> models.Model:
    """``instance`` with ``data`` set on it, not saved (to-many relations left out)."""
    for name, value in _split_to_many(type(instance), data).items():
        setattr(instance, name, value)
    return instance
