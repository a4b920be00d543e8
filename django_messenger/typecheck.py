"""Checks that a value decoded from the wire fits the type annotation of its field.

:func:`checker_for` turns an annotation into a *check*: a function that takes a
decoded value and returns it (converted where the wire cannot tell two types apart),
or raises :class:`MessageDecodingFailed`. Checks are built once a class (the codecs
in :mod:`django_messenger.encoding` cache them) and cost a few type tests a value.

What each annotation accepts (docs/wire-format.md has the full table):

- ``str``, ``bool``, ``bytes``, ``Decimal``, ``datetime``, ``date``, ``time``,
  ``timedelta``, ``UUID``, a dataclass or a model: an instance of that class (or a
  subclass). ``int``: an int, not a bool. ``float``: a float or an int, not a bool.
- ``None``, ``X | None``, ``Optional[X]``, ``Union[...]``: one of the alternatives.
- ``list[X]``, ``dict[K, V]``: that container, items checked. ``tuple[X, ...]``,
  ``tuple[X, Y]``, ``set[X]``, ``frozenset[X]``: that container or a list (JSON has no
  other), converted to the declared container.
- ``Literal[...]``: one of the listed values. An ``Enum`` (``TextChoices``, ``IntEnum``...):
  a member, rebuilt from the value that travelled (``Color("red")``).
- ``Any``, ``object``, no annotation, and annotations this module does not know
  (type variables, callables...): any value the wire format can carry.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import logging
import sys
import types
import typing
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from .bounds import bounded_set
from .exceptions import MessageDecodingFailed

logger = logging.getLogger("django_messenger")

Check = Callable[[Any], Any]


def accept_any(value: Any) -> Any:
    """The check of ``Any``: every value the wire format carries."""
    return value


def _fail(value: Any, expected: str) -> MessageDecodingFailed:
    return MessageDecodingFailed(f"Expected {expected}, got a value of type {type(value).__name__}.")


# -- scalars ----------------------------------------------------------------------


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and type(value) is not bool:
        return value
    raise _fail(value, "an int")


def _check_float(value: Any) -> Any:
    if isinstance(value, (float, int)) and type(value) is not bool:
        return value
    raise _fail(value, "a float")


def _check_none(value: Any) -> Any:
    if value is None:
        return value
    raise _fail(value, "null")


def _instance_of(cls: type) -> Check:
    def check(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        raise _fail(value, f"a {cls.__qualname__}")

    return check


_SCALARS: dict[Any, Check] = {
    int: _check_int,
    float: _check_float,
    type(None): _check_none,
    None: _check_none,
    **{
        cls: _instance_of(cls)
        for cls in (str, bool, bytes, Decimal, datetime, date, time, timedelta, uuid.UUID)
    },
}


def _enum_check(cls: type[enum.Enum]) -> Check:
    def check(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)  # a lookup by value among the members: nothing is called by name
        except (ValueError, TypeError):
            raise _fail(value, f"a value of {cls.__qualname__}") from None

    return check


def _literal_check(options: tuple[Any, ...]) -> Check:
    def check(value: Any) -> Any:
        for option in options:
            plain = option.value if isinstance(option, enum.Enum) else option
            if type(value) is type(plain) and value == plain:
                return option
        raise MessageDecodingFailed(f"Expected one of {list(options)!r}, got {value!r:.60}.")

    return check


def _optional(check: Check, exact: type | None = None) -> Check:
    """``X | None``: None, or what ``check`` accepts (without raising for the None test).

    ``exact``, when given, is a class whose instances ``check`` accepts as they are: the
    common case then costs one call.
    """
    if exact is not None:

        def optional_exact(value: Any) -> Any:
            if value is None or type(value) is exact:
                return value
            return check(value)

        return optional_exact

    def optional(value: Any) -> Any:
        return None if value is None else check(value)

    return optional


def _union_check(alternatives: list[Check]) -> Check:
    def check(value: Any) -> Any:
        errors = []
        for alternative in alternatives:
            try:
                return alternative(value)
            except MessageDecodingFailed as exc:
                if alternative is not _check_none:
                    errors.append(exc)
        if len(errors) == 1:  # X | None: say what X expected
            raise errors[0]
        raise _fail(value, "a value of one of the declared types")

    return check


# -- containers ---------------------------------------------------------------------


def _list_check(item: Check) -> Check:
    def check(value: Any) -> Any:
        if type(value) is not list:
            raise _fail(value, "a list")
        return value if item is accept_any else [item(element) for element in value]

    return check


def _sequence_check(item: Check) -> Check:
    def check(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _fail(value, "a sequence")
        return value if item is accept_any else type(value)(item(element) for element in value)

    return check


def _tuple_check(items: list[Check] | None, rest: Check | None) -> Check:
    def check(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _fail(value, "a tuple")
        if rest is not None:
            return tuple(rest(element) for element in value)
        assert items is not None
        if len(value) != len(items):
            raise MessageDecodingFailed(f"Expected a tuple of {len(items)} items, got {len(value)}.")
        return tuple(item(element) for item, element in zip(items, value, strict=True))

    return check


def _set_check(item: Check, kind: type[set[Any]] | type[frozenset[Any]] | None) -> Check:
    def check(value: Any) -> Any:
        if not isinstance(value, (list, set, frozenset)):
            raise _fail(value, "a set")
        target: type[set[Any]] | type[frozenset[Any]] = kind or (
            frozenset if type(value) is frozenset else set
        )
        if item is accept_any and type(value) is target:
            return value
        return bounded_set([item(element) for element in value], target)

    return check


def _dict_check(key: Check, item: Check) -> Check:
    def check(value: Any) -> Any:
        if type(value) is not dict:
            raise _fail(value, "a dict")
        if key is accept_any and item is accept_any:
            return value
        return {key(k): item(v) for k, v in value.items()}

    return check


_SEQUENCES = {collections.abc.Sequence, collections.abc.MutableSequence}
_SETS = {set: set, frozenset: frozenset, collections.abc.Set: None, collections.abc.MutableSet: set}
_MAPPINGS = {dict, collections.abc.Mapping, collections.abc.MutableMapping}


def checker_for(hint: Any) -> Check:
    """The check of the (resolved) annotation ``hint``."""
    if hint is Any or hint is object or isinstance(hint, typing.TypeVar):
        return accept_any
    scalar = _SCALARS.get(hint) if _hashable(hint) else None
    if scalar is not None:
        return scalar
    supertype = getattr(hint, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return checker_for(supertype)
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin is typing.Annotated:
        return checker_for(arguments[0])
    if origin is typing.Union or isinstance(hint, types.UnionType):
        alternatives = [checker_for(argument) for argument in arguments]
        if accept_any in alternatives:
            return accept_any
        if _check_none in alternatives:
            rest = [alternative for alternative in alternatives if alternative is not _check_none]
            return _optional(rest[0] if len(rest) == 1 else _union_check(rest))
        return _union_check(alternatives)
    if origin is typing.Literal:
        return _literal_check(arguments)
    if origin is None and isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            return _enum_check(hint)
        origin, arguments = hint, ()
    if origin is list:
        return _list_check(checker_for(arguments[0]) if arguments else accept_any)
    if origin in _SEQUENCES:
        return _sequence_check(checker_for(arguments[0]) if arguments else accept_any)
    if origin is tuple:
        if not arguments:
            return _tuple_check(None, accept_any)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return _tuple_check(None, checker_for(arguments[0]))
        if arguments == ((),):
            return _tuple_check([], None)
        return _tuple_check([checker_for(argument) for argument in arguments], None)
    if origin in _SETS:
        return _set_check(checker_for(arguments[0]) if arguments else accept_any, _SETS[origin])
    if origin in _MAPPINGS:
        if len(arguments) == 2:
            return _dict_check(checker_for(arguments[0]), checker_for(arguments[1]))
        return _dict_check(accept_any, accept_any)
    if isinstance(origin, type):
        return _instance_of(origin)  # a dataclass, a model, any other class: an instance of it
    return accept_any  # Callable, Protocol members, string annotations left unresolved...


def _hashable(hint: Any) -> bool:
    try:
        hash(hint)
    except TypeError:
        return False
    return True


# -- classes ----------------------------------------------------------------------


def resolved_hints(cls: type) -> dict[str, Any]:
    """``cls``'s annotations, resolved in its module (``from __future__ import annotations`` too).

    An annotation that cannot be resolved (a name imported under ``TYPE_CHECKING`` only)
    is left out, and its field is not checked; a warning says so once.
    """
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:  # NameError and friends from string annotations: resolve one by one
        pass
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace = dict(vars(module)) if module is not None else {}
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            holder = type("_Holder", (), {"__annotations__": {name: annotation}})
            try:
                hints[name] = typing.get_type_hints(holder, namespace, include_extras=True)[name]
            except Exception:
                logger.warning(
                    "The annotation %r of %s.%s cannot be resolved: messages do not check that field.",
                    annotation,
                    cls.__qualname__,
                    name,
                )
                hints.pop(name, None)
    return hints


def dataclass_checks(cls: type) -> dict[str, Check]:
    """The check of each field of dataclass ``cls`` (``Any`` where there is nothing to check).

    A field whose default is ``None`` also accepts ``None`` (``x: int = None``).
    """
    hints = resolved_hints(cls)
    checks: dict[str, Check] = {}
    for field in dataclasses.fields(cls):
        check = checker_for(hints[field.name]) if field.name in hints else accept_any
        if field.default is None and check is not accept_any:
            check = _optional(check)
        checks[field.name] = check
    return checks


def plain_class_checks(cls: type) -> dict[str, Check]:
    """The attributes a plain (non-dataclass) class ``cls`` may get from the wire, and their checks.

    They are the parameters of its ``__init__`` and its annotated attributes. A name that
    would shadow a method, a property or another descriptor of the class is left out, as is
    any dunder name.
    """
    hints = {
        name: hint
        for name, hint in resolved_hints(cls).items()
        if typing.get_origin(hint) is not typing.ClassVar
    }
    names = dict.fromkeys(hints)
    init = getattr(cls, "__init__")  # noqa: B009 - mypy refuses cls.__init__
    try:
        parameters = list(inspect.signature(init).parameters.values())[1:]
    except (TypeError, ValueError):
        parameters = []
    try:
        init_hints = typing.get_type_hints(init)
    except Exception:  # unresolvable string annotations: those parameters are not checked
        init_hints = {}
    for parameter in parameters:
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            names.setdefault(parameter.name)
    checks: dict[str, Check] = {}
    for name in names:
        if name.startswith("__") or _shadows_behaviour(cls, name):
            continue
        hint = hints.get(name, init_hints.get(name, Any))
        checks[name] = checker_for(hint)
    return checks


def _shadows_behaviour(cls: type, name: str) -> bool:
    try:
        attribute = inspect.getattr_static(cls, name)
    except AttributeError:
        return False
    return callable(attribute) or hasattr(type(attribute), "__get__")


# -- models -----------------------------------------------------------------------

#: The Python type of a model field's value, by the field's internal type.
_MODEL_FIELD_TYPES: dict[str, Any] = {
    **dict.fromkeys(
        (
            "AutoField",
            "BigAutoField",
            "SmallAutoField",
            "IntegerField",
            "BigIntegerField",
            "SmallIntegerField",
            "PositiveIntegerField",
            "PositiveBigIntegerField",
            "PositiveSmallIntegerField",
        ),
        int,
    ),
    **dict.fromkeys(
        ("CharField", "TextField", "SlugField", "FileField", "FilePathField", "GenericIPAddressField"), str
    ),
    "BooleanField": bool,
    "FloatField": float,
    "DecimalField": Decimal,
    "DateTimeField": datetime,
    "DateField": date,
    "TimeField": time,
    "DurationField": timedelta,
    "UUIDField": uuid.UUID,
    "BinaryField": bytes,
}


def model_checks(cls: Any) -> dict[str, Check]:
    """The check of each concrete field of model ``cls``, keyed by ``attname``.

    Loose on purpose: a value may be ``None`` (an unsaved instance may hold it; the
    database has the last word), otherwise it must be of the field's Python type. A
    foreign key takes the type of the field it points to. Field classes this module does
    not know (``JSONField``, third-party fields) accept any value.
    """
    checks: dict[str, Check] = {}
    for field in cls._meta.concrete_fields:
        target = field
        while getattr(target, "target_field", None) is not None and target.is_relation:
            target = target.target_field
        python_type = _MODEL_FIELD_TYPES.get(target.get_internal_type())
        if python_type is None:
            checks[field.attname] = accept_any
        else:
            checks[field.attname] = _optional(checker_for(python_type), exact=python_type)
    return checks
