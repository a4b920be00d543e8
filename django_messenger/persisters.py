"""The persister: where a messenger view's "save" goes instead of the database.

After API Platform's Messenger data persister. The view hands the object that DRF
would have saved (an unsaved model instance, the resource with its changes applied,
or an input DTO) to :class:`MessengerPersister`, which dispatches it on the bus with
an :class:`OperationStamp` (and a :class:`RemoveStamp` for a destroy).
"""

from __future__ import annotations

import functools
import inspect
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
from .locator import locator
from .stamps import OperationStamp, RemoveStamp, Stamp, TrackStamp, UserStamp


class MessengerPersister:
    """Dispatches written objects instead of saving them; remembers the last envelope."""

    #: Stamp dispatches with a TrackStamp, so that workers record their status (the view sets it).
    track: bool = False

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
        if self.track:
            user = getattr(self.request, "user", None)
            owner = str(user.pk) if user is not None and user.is_authenticated else ""
            stamps.append(TrackStamp(owner=owner, handlers=len(locator.handlers_for(type(obj))) or 1))
        # A view writes nothing itself, so nothing waits for a commit: the send happens
        # before the answer, and a broker failure is a 503.
        self.envelope = self.bus.dispatch(obj, stamps=stamps, on_commit=False)
        return self.envelope


def model_of(serializer: Any) -> type[models.Model] | None:
    """The model of a ``ModelSerializer`` (class or instance), or None for any other serializer."""
    cls = serializer if isinstance(serializer, type) else type(serializer)
    if issubclass(cls, serializers.ModelSerializer):
        return cls.Meta.model  # type: ignore[no-any-return,unused-ignore]
    return None


def dispatched_type(view: Any, serializer_class: Any) -> type | None:
    """The class whose instances a messenger view's writes dispatch, or None when it cannot tell.

    ``view`` is the view (class or instance), ``serializer_class`` the serializer that validates
    its writes (``input_serializer_class`` for ``messenger = "input"``). The one statement of the
    rule, used by the view and by the system checks (E001, E006, E011):

    - ``messenger = "input"``: ``message_class``, else the input serializer's model;
    - otherwise: the serializer's model (a ``ModelSerializer``: the resource itself), else
      ``message_class``.

    The view builds ``message_class(**validated_data)`` unless the answer is the serializer's
    model, whose (unsaved or changed) instance it dispatches.
    """
    message_class: type | None = getattr(view, "message_class", None)
    model = model_of(serializer_class)
    if getattr(view, "messenger", True) == "input":
        return message_class or model
    return model or message_class


def _split_to_many(model: type[models.Model], data: Mapping[str, Any]) -> dict[str, Any]:
    info = model_meta.get_field_info(model)
    return {
        name: value
        for name, value in data.items()
        if not (name in info.relations and info.relations[name].to_many)
    }


@functools.cache
def message_signature(message_class: type) -> inspect.Signature | None:
    """The signature ``message_class(**data)`` is called with, or None when Python cannot tell.

    Cached a class: ``inspect.signature`` costs tens of microseconds, on every write.
    """
    try:
        return inspect.signature(message_class)
    except (TypeError, ValueError):
        return None


@functools.cache
def _keywords_that_fit(message_class: type) -> tuple[frozenset[str], frozenset[str] | None] | None:
    """(the parameters a keyword call must name, those it may name or None for any), or None
    when the signature has positional-only parameters or Python cannot tell.

    What ``signature.bind(**data)`` accepts, as two sets: a write whose keys fit is not bound
    (``Signature.bind`` costs microseconds on every write); one that does not fit is, for its errors.
    """
    signature = message_signature(message_class)
    if signature is None:
        return None
    required: set[str] = set()
    allowed: set[str] = set()
    any_keyword = False
    for name, parameter in signature.parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            any_keyword = True
        elif parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            allowed.add(name)
            if parameter.default is parameter.empty:
                required.add(name)
        elif parameter.kind is parameter.POSITIONAL_ONLY:
            return None  # bind's own rules for these (a name also caught by **kwargs...): always asked
    return frozenset(required), None if any_keyword else frozenset(allowed)


def missing_parameters(signature: inspect.Signature, names: Iterable[str]) -> list[str]:
    """The parameters of ``signature`` without a default that keywords ``names`` leave out."""
    given = set(names)
    return [
        name
        for name, parameter in signature.parameters.items()
        if parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        and (parameter.kind is parameter.POSITIONAL_ONLY or name not in given)
    ]


def unexpected_parameters(signature: inspect.Signature, names: Iterable[str]) -> list[str]:
    """The keywords among ``names`` that ``signature`` does not take."""
    parameters = signature.parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return []
    taken = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return [name for name in names if name not in taken]


def _binding_errors(
    serializer: serializers.BaseSerializer[Any], signature: inspect.Signature, data: Mapping[str, Any]
) -> dict[str, list[str]]:
    """DRF-shaped errors for a request whose data does not fit the message's signature."""
    fields = getattr(serializer, "fields", {})
    required = serializers.Field.default_error_messages["required"]
    errors: dict[str, list[str]] = {}
    unnamed: list[str] = []
    for name in missing_parameters(signature, data):
        if name in fields and not fields[name].read_only:
            errors[name] = [str(required)]
        else:
            unnamed.append(name)
    for name in unexpected_parameters(signature, data):
        errors[name] = ["This endpoint does not accept this field: leave it out."]
    if unnamed or not errors:
        errors[api_settings.NON_FIELD_ERRORS_KEY] = [
            "This request lacks values this endpoint needs" + (f": {', '.join(unnamed)}." if unnamed else ".")
        ]
    return errors


def build_message(
    serializer: serializers.BaseSerializer[Any], data: Mapping[str, Any], message_class: type
) -> Any:
    """``message_class(**data)``, or a 400 when ``data`` does not fit its signature.

    Missing and unexpected arguments are the request's fault (a field left out, for
    instance on a PATCH or for an optional serializer field): a ``ValidationError``. The
    data is bound against the signature first, so a ``TypeError`` raised inside the
    class's own ``__init__`` stays a server error.
    """
    fit = _keywords_that_fit(message_class)
    keys = data.keys()
    if fit is not None and fit[0] <= keys and (fit[1] is None or keys <= fit[1]):
        return message_class(**data)
    signature = message_signature(message_class)
    if signature is not None:
        try:
            signature.bind(**data)
        except TypeError:
            raise serializers.ValidationError(_binding_errors(serializer, signature, data)) from None
    return message_class(**data)


def build_new(serializer: serializers.BaseSerializer[Any], data: Mapping[str, Any], cls: type | None) -> Any:
    """The object a create would have saved, of the view's :func:`dispatched_type` ``cls``:
    an unsaved instance of the serializer's model, or ``cls(**data)``.

    To-many relations cannot be set on an unsaved instance: their names are still in the
    operation's ``fields``, and their values are not carried (docs/views.md).
    """
    if cls is None:
        raise ImproperlyConfigured(
            f"{type(serializer).__name__} is not a ModelSerializer: set message_class on the view to say "
            f"which message class its validated data builds."
        )
    model = model_of(serializer)
    if model is not None and cls is model:
        return model(**_split_to_many(model, data))
    return build_message(serializer, data, cls)


def apply_changes(instance: models.Model, data: Mapping[str, Any]) -> models.Model:
    """``instance`` with ``data`` set on it, not saved (to-many relations left out)."""
    for name, value in _split_to_many(type(instance), data).items():
        setattr(instance, name, value)
    return instance
