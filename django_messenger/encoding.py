"""The JSON wire format of an envelope (documented in docs/wire-format.md).

An envelope travels as one JSON object, the single argument of a Dramatiq message::

    {"v": 1, "id": "<uuid>", "type": "<type name>", "body": {...},
     "stamps": [{"name": "<wire name>", "data": {...}}, ...]}

``body`` holds the message's fields. JSON's own types (str, int, finite float,
bool, null, lists and objects with string keys) travel as themselves; every other
value is a *tagged* object ``{"$type": "<tag>", "$value": ...}``: ``decimal``,
``datetime``, ``date``, ``time``, ``timedelta``, ``uuid``, ``float`` (NaN and
infinities), ``tuple``, ``set``, ``frozenset``, ``bytes``, ``dict`` (non-string
keys, or a ``"$type"`` key of its own), and ``object`` for a nested dataclass or
model instance of a *registered* type. Decoding resolves type names through the
type table (:mod:`django_messenger.message_types`) only: nothing read from the wire is
imported or executed by name. Each decoded value is checked against its field's
annotation (:mod:`django_messenger.typecheck`), and decoding is bounded in nesting,
container sizes and hash collisions
(:mod:`django_messenger.bounds`).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import math
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import models, router
from django.db.models.fields.files import FieldFile

from .bounds import bounded_set, check_depth, check_hashes, check_items
from .envelope import Envelope
from .exceptions import MessageDecodingFailed, MessageEncodingFailed
from .message_types import MessageTypes, message_types
from .stamps import STAMP_TYPES, Stamp
from .typecheck import Check, dataclass_checks, model_checks, plain_class_checks

WIRE_VERSION = 1
TAG = "$type"
VALUE = "$value"

_PLAIN = (str, int, bool, type(None))


# -- values -----------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """``value`` as JSON-ready data, tagged where JSON has no type for it."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value)
    if isinstance(value, models.Model) or dataclasses.is_dataclass(value):
        return {TAG: "object", "class": message_types.name_of(type(value)), VALUE: encode_body(value)}
    # Subclasses of str and int (Django's TextChoices, IntEnum members...) travel as their value.
    for scalar in (str, int, float):
        if isinstance(value, scalar):
            return encode_value(scalar(value))
    for base, encoder in _ENCODERS.items():
        if isinstance(value, base):
            return encoder(value)
    if isinstance(value, enum.Enum):  # rebuilt from its value where a field is annotated with its enum
        return encode_value(value.value)
    raise MessageEncodingFailed(
        f"A value of type {kind.__module__}.{kind.__qualname__} cannot travel in a message; "
        f"use JSON types, Decimal, datetime, date, time, timedelta, UUID, or a registered dataclass or model."
    )


def _encode_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {TAG: "float", VALUE: repr(value)}


def _encode_dict(value: dict[Any, Any]) -> Any:
    if TAG not in value and all(type(key) is str for key in value):
        return {key: encode_value(item) for key, item in value.items()}
    return {TAG: "dict", VALUE: [[encode_value(key), encode_value(item)] for key, item in value.items()]}


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    float: _encode_float,
    list: lambda value: [encode_value(item) for item in value],
    dict: _encode_dict,
    Decimal: lambda value: {TAG: "decimal", VALUE: str(value)},
    datetime: lambda value: {TAG: "datetime", VALUE: value.isoformat()},
    date: lambda value: {TAG: "date", VALUE: value.isoformat()},
    time: lambda value: {TAG: "time", VALUE: value.isoformat()},
    timedelta: lambda value: {TAG: "timedelta", VALUE: [value.days, value.seconds, value.microseconds]},
    uuid.UUID: lambda value: {TAG: "uuid", VALUE: str(value)},
    tuple: lambda value: {TAG: "tuple", VALUE: [encode_value(item) for item in value]},
    set: lambda value: {TAG: "set", VALUE: [encode_value(item) for item in value]},
    frozenset: lambda value: {TAG: "frozenset", VALUE: [encode_value(item) for item in value]},
    bytes: lambda value: {TAG: "bytes", VALUE: base64.b64encode(value).decode("ascii")},
}


def decode_value(data: Any, depth: int = 0) -> Any:
    """The Python value of JSON ``data`` written by :func:`encode_value`.

    ``depth`` is how deep ``data`` sits in the message: decoding is bounded (see
    :mod:`django_messenger.bounds`) in nesting, in items a container and in hash collisions.
    """
    kind = type(data)
    if kind is dict:
        depth += 1
        check_depth(depth)
        if TAG in data:
            return _decode_tagged(data, depth)
        check_items(len(data))
        return {key: decode_value(item, depth) for key, item in data.items()}
    if kind is list:
        depth += 1
        check_depth(depth)
        check_items(len(data))
        return [decode_value(item, depth) for item in data]
    return data


def _decode_tagged(data: dict[str, Any], depth: int) -> Any:
    tag = data[TAG]
    value = data.get(VALUE)
    if tag == "object":
        return decode_body(message_types.resolve(str(data.get("class"))), value, depth)
    decoder = _DECODERS.get(tag)
    if decoder is not None:
        return decoder(value)
    container = _CONTAINERS.get(tag)
    if container is None:
        raise MessageDecodingFailed(f"Unknown value tag {tag!r}.")
    if type(value) is not list:
        raise MessageDecodingFailed(f"A {tag} travels as a list of values.")
    check_items(len(value))
    return container(value, depth)


def _decode_items(value: list[Any], depth: int) -> list[Any]:
    return [decode_value(item, depth) for item in value]


def _decode_dict(value: list[Any], depth: int) -> dict[Any, Any]:
    pairs = [(decode_value(key, depth), decode_value(item, depth)) for key, item in value]
    check_hashes(key for key, _ in pairs)
    return dict(pairs)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "decimal": lambda value: Decimal(value),
    "datetime": lambda value: datetime.fromisoformat(value),
    "date": lambda value: date.fromisoformat(value),
    "time": lambda value: time.fromisoformat(value),
    "timedelta": lambda value: timedelta(days=value[0], seconds=value[1], microseconds=value[2]),
    "uuid": lambda value: uuid.UUID(value),
    "float": lambda value: float(value),
    "bytes": lambda value: base64.b64decode(value.encode("ascii"), validate=True),
}

#: Tagged containers: a list of values (of key-value pairs for ``dict``) on the wire.
_CONTAINERS: dict[str, Callable[[list[Any], int], Any]] = {
    "tuple": lambda value, depth: tuple(_decode_items(value, depth)),
    "set": lambda value, depth: bounded_set(_decode_items(value, depth), set),
    "frozenset": lambda value, depth: bounded_set(_decode_items(value, depth), frozenset),
    "dict": _decode_dict,
}


# -- message bodies ---------------------------------------------------------------


class _Codec:
    """How one message class becomes a body and back; built once a class.

    A plain (non-dataclass) class carries only the attributes its ``__init__`` takes or its
    annotations declare, each checked against its annotation; none may shadow a method.
    """

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.checks = plain_class_checks(cls)

    def encode(self, obj: Any) -> dict[str, Any]:
        try:
            attributes = vars(obj)
        except TypeError:
            raise MessageEncodingFailed(
                f"{self.cls.__qualname__} has no __dict__ (it uses __slots__): make it a dataclass."
            ) from None
        if not self.checks.keys() >= attributes.keys():
            unknown = sorted(set(attributes) - set(self.checks))
            raise MessageEncodingFailed(
                f"{self.cls.__qualname__} has attribute(s) {unknown} that its __init__ parameters "
                f"and annotations do not name (or that shadow its methods): only those travel; "
                f"make it a dataclass."
            )
        return {key: encode_value(value) for key, value in attributes.items()}

    def decode(self, body: dict[str, Any], depth: int) -> Any:
        checks = self.checks
        if not checks.keys() >= body.keys():
            raise MessageDecodingFailed(
                f"{self.cls.__qualname__} has no attribute(s) {sorted(set(body) - set(checks))}."
            )
        obj: Any = object.__new__(self.cls)
        obj.__dict__.update(_decode_fields(self.cls, checks, body, depth))
        return obj


class _DataclassCodec(_Codec):
    def __init__(self, cls: type) -> None:
        self.cls = cls
        fields = dataclasses.fields(cls)
        self.names = tuple(field.name for field in fields)
        self.init_names = frozenset(field.name for field in fields if field.init)
        self.all_init = self.init_names == frozenset(self.names)
        self.checks = dataclass_checks(cls)

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: encode_value(getattr(obj, name)) for name in self.names}

    def decode(self, body: dict[str, Any], depth: int) -> Any:
        checks = self.checks
        if not checks.keys() >= body.keys():
            unknown = sorted(set(body) - set(checks))
            raise MessageDecodingFailed(f"{self.cls.__qualname__} has no field(s) {unknown}.")
        values = _decode_fields(self.cls, checks, body, depth)
        if self.all_init:
            return self.cls(**values)
        obj = self.cls(**{name: value for name, value in values.items() if name in self.init_names})
        for name, value in values.items():
            if name not in self.init_names:
                object.__setattr__(obj, name, value)
        return obj


class _ModelCodec(_Codec):
    """A model instance: its loaded concrete field values (foreign keys by id) and whether it is new.

    The database alias is not read from the wire: a saved instance gets the router's
    ``db_for_write`` alias, a new one none (as a new instance has), so a forged message cannot
    send a ``save()`` to another database. (Messages written before this change carry a
    ``"db"`` key; it is ignored.)
    """

    def __init__(self, cls: type[models.Model]) -> None:
        self.cls = cls
        self.fields = tuple(cls._meta.concrete_fields)
        self.checks = model_checks(cls)

    def encode(self, obj: Any) -> dict[str, Any]:
        loaded = obj.__dict__
        values = {}
        for field in self.fields:
            if field.attname in loaded:
                value = loaded[field.attname]
                if isinstance(value, FieldFile):
                    value = value.name
                values[field.attname] = encode_value(value)
        return {"fields": values, "adding": obj._state.adding}

    def decode(self, body: dict[str, Any], depth: int) -> Any:
        fields = body["fields"]
        adding = body["adding"]
        if type(fields) is not dict or type(adding) is not bool:
            raise MessageDecodingFailed(
                f"A {self.cls.__qualname__} travels as its fields and whether it is new."
            )
        checks = self.checks
        unknown = set(fields) - checks.keys()
        if unknown:
            raise MessageDecodingFailed(f"{self.cls.__qualname__} has no field(s) {sorted(unknown)}.")
        decoded = _decode_fields(self.cls, checks, fields, depth)
        names = [field.attname for field in self.fields if field.attname in decoded]
        values = [decoded[name] for name in names]
        db = None if adding else router.db_for_write(self.cls)
        model: Any = self.cls
        obj = model.from_db(db, names, values)
        obj._state.adding = adding
        return obj


def _decode_fields(cls: type, checks: dict[str, Check], body: dict[str, Any], depth: int) -> dict[str, Any]:
    """Each value of ``body`` decoded and checked; an error names the class and the field."""
    values = {}
    name = ""
    try:
        for name, value in body.items():
            # JSON's scalars are their own decoding: no call for them (the worker's hot path)
            values[name] = checks[name](value if type(value) in _PLAIN else decode_value(value, depth))
    except MessageDecodingFailed as exc:
        raise MessageDecodingFailed(f"{cls.__qualname__}.{name}: {exc}") from None
    return values


_codecs: dict[type, _Codec] = {}


def _codec(cls: type) -> _Codec:
    codec = _codecs.get(cls)
    if codec is None:
        if issubclass(cls, models.Model):
            codec = _ModelCodec(cls)
        elif dataclasses.is_dataclass(cls):
            codec = _DataclassCodec(cls)
        else:
            codec = _Codec(cls)
        _codecs[cls] = codec
    return codec


def encode_body(message: Any) -> dict[str, Any]:
    return _codec(type(message)).encode(message)


def decode_body(cls: type, body: Any, depth: int = 0) -> Any:
    """An instance of ``cls`` from ``body``; each value checked against its field's type."""
    if type(body) is not dict:
        raise MessageDecodingFailed(f"The body of a {cls.__qualname__} must be a JSON object.")
    return _codec(cls).decode(body, depth + 1)


# -- envelopes --------------------------------------------------------------------


def encode_envelope(envelope: Envelope, *, types: MessageTypes = message_types) -> dict[str, Any]:
    """The JSON-ready form of ``envelope``; stamps that are never sent are left out."""
    message = envelope.message
    return {
        "v": WIRE_VERSION,
        "id": str(envelope.message_id),
        "type": types.name_of(type(message)),
        "body": encode_body(message),
        "stamps": [
            {"name": stamp.wire_name, "data": stamp.to_wire()}
            for stamp in envelope.stamps
            if stamp.wire_name is not None
        ],
    }


def decode_envelope(
    payload: Any, *, types: MessageTypes = message_types, stamps: tuple[Stamp, ...] = ()
) -> Envelope:
    """The envelope in ``payload``; raises MessageDecodingFailed for anything malformed.

    ``stamps`` are added after the decoded ones (a worker's ``ReceivedStamp``), in the same
    envelope rather than in a copy.
    """
    try:
        message, decoded = _decode_contents(payload, types)
        return Envelope(message, (*decoded, *stamps), message_id=uuid.UUID(payload["id"]))
    except MessageDecodingFailed:
        raise
    except Exception as exc:  # anything read from the wire may be wrong in any way
        raise MessageDecodingFailed(f"Malformed envelope: {type(exc).__name__}: {exc}") from exc


def check_envelope(payload: Any, *, types: MessageTypes = message_types) -> None:
    """Raise MessageDecodingFailed where :func:`decode_envelope` would, for the message and its stamps.

    The web side's dry run of what it is about to publish: it decodes the message and the stamps
    as a worker will, but builds no envelope and does not parse the id, which
    :func:`encode_envelope` wrote from a UUID.
    """
    try:
        _decode_contents(payload, types)
    except MessageDecodingFailed:
        raise
    except Exception as exc:  # the same wording as a worker's
        raise MessageDecodingFailed(f"Malformed envelope: {type(exc).__name__}: {exc}") from exc


def _decode_contents(payload: Any, types: MessageTypes) -> tuple[Any, list[Stamp]]:
    if type(payload) is not dict:
        raise MessageDecodingFailed("An envelope must be a JSON object.")
    if payload.get("v") != WIRE_VERSION:
        raise MessageDecodingFailed(f"Unsupported wire format version {payload.get('v')!r}.")
    cls = types.resolve(payload["type"])
    message = decode_body(cls, payload["body"])
    return message, [_decode_stamp(item) for item in payload.get("stamps", ())]


def _decode_stamp(item: Any) -> Stamp:
    stamp_type = STAMP_TYPES.get(item["name"])
    if stamp_type is None:
        raise MessageDecodingFailed(f"Unknown stamp {item['name']!r}.")
    return stamp_type.from_wire(item["data"])
