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
registry only: nothing read from the wire is imported or executed by name.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import models
from django.db.models.fields.files import FieldFile

from .envelope import Envelope
from .exceptions import MessageDecodingFailed, MessageEncodingFailed
from .registry import HandlerRegistry, registry
from .stamps import STAMP_TYPES, Stamp

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
        return {TAG: "object", "class": registry.name_of(type(value)), VALUE: encode_body(value)}
    # Subclasses of str and int (Django's TextChoices, IntEnum members...) travel as their value.
    for scalar in (str, int, float):
        if isinstance(value, scalar):
            return encode_value(scalar(value))
    for base, encoder in _ENCODERS.items():
        if isinstance(value, base):
            return encoder(value)
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


def decode_value(data: Any) -> Any:
    """The Python value of JSON ``data`` written by :func:`encode_value`."""
    kind = type(data)
    if kind is dict:
        if TAG in data:
            return _decode_tagged(data)
        return {key: decode_value(item) for key, item in data.items()}
    if kind is list:
        return [decode_value(item) for item in data]
    return data


def _decode_tagged(data: dict[str, Any]) -> Any:
    tag = data[TAG]
    value = data.get(VALUE)
    if tag == "object":
        return decode_body(registry.resolve(str(data.get("class"))), value)
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise MessageDecodingFailed(f"Unknown value tag {tag!r}.")
    return decoder(value)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "decimal": lambda value: Decimal(value),
    "datetime": lambda value: datetime.fromisoformat(value),
    "date": lambda value: date.fromisoformat(value),
    "time": lambda value: time.fromisoformat(value),
    "timedelta": lambda value: timedelta(days=value[0], seconds=value[1], microseconds=value[2]),
    "uuid": lambda value: uuid.UUID(value),
    "float": lambda value: float(value),
    "tuple": lambda value: tuple(decode_value(item) for item in value),
    "set": lambda value: {decode_value(item) for item in value},
    "frozenset": lambda value: frozenset(decode_value(item) for item in value),
    "bytes": lambda value: base64.b64decode(value.encode("ascii"), validate=True),
    "dict": lambda value: {decode_value(key): decode_value(item) for key, item in value},
}


# -- message bodies ---------------------------------------------------------------


class _Codec:
    """How one message class becomes a body and back; built once a class."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def encode(self, obj: Any) -> dict[str, Any]:
        try:
            attributes = vars(obj)
        except TypeError:
            raise MessageEncodingFailed(
                f"{self.cls.__qualname__} has no __dict__ (it uses __slots__): make it a dataclass."
            ) from None
        return {key: encode_value(value) for key, value in attributes.items()}

    def decode(self, body: dict[str, Any]) -> Any:
        obj: Any = object.__new__(self.cls)
        obj.__dict__.update({key: decode_value(value) for key, value in body.items()})
        return obj


class _DataclassCodec(_Codec):
    def __init__(self, cls: type) -> None:
        super().__init__(cls)
        fields = dataclasses.fields(cls)
        self.names = tuple(field.name for field in fields)
        self.name_set = frozenset(self.names)
        self.init_names = frozenset(field.name for field in fields if field.init)
        self.all_init = self.init_names == self.name_set

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: encode_value(getattr(obj, name)) for name in self.names}

    def decode(self, body: dict[str, Any]) -> Any:
        if not self.name_set.issuperset(body):
            unknown = sorted(set(body) - self.name_set)
            raise MessageDecodingFailed(f"{self.cls.__qualname__} has no field(s) {unknown}.")
        values = {name: decode_value(value) for name, value in body.items()}
        if self.all_init:
            return self.cls(**values)
        obj = self.cls(**{name: value for name, value in values.items() if name in self.init_names})
        for name, value in values.items():
            if name not in self.init_names:
                object.__setattr__(obj, name, value)
        return obj


class _ModelCodec(_Codec):
    """A model instance: its loaded concrete field values (foreign keys by id) and state."""

    def __init__(self, cls: type[models.Model]) -> None:
        super().__init__(cls)
        self.fields = tuple(cls._meta.concrete_fields)
        self.attnames = frozenset(field.attname for field in self.fields)

    def encode(self, obj: Any) -> dict[str, Any]:
        loaded = obj.__dict__
        values = {}
        for field in self.fields:
            if field.attname in loaded:
                value = loaded[field.attname]
                if isinstance(value, FieldFile):
                    value = value.name
                values[field.attname] = encode_value(value)
        return {"fields": values, "adding": obj._state.adding, "db": obj._state.db}

    def decode(self, body: dict[str, Any]) -> Any:
        fields = body["fields"]
        unknown = set(fields) - self.attnames
        if unknown:
            raise MessageDecodingFailed(f"{self.cls.__qualname__} has no field(s) {sorted(unknown)}.")
        names = [field.attname for field in self.fields if field.attname in fields]
        model: Any = self.cls
        obj = model.from_db(body.get("db"), names, [decode_value(fields[name]) for name in names])
        obj._state.adding = bool(body["adding"])
        obj._state.db = body.get("db")
        return obj


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


def decode_body(cls: type, body: Any) -> Any:
    if type(body) is not dict:
        raise MessageDecodingFailed(f"The body of a {cls.__qualname__} must be a JSON object.")
    return _codec(cls).decode(body)


# -- envelopes --------------------------------------------------------------------


def encode_envelope(envelope: Envelope, *, types: HandlerRegistry = registry) -> dict[str, Any]:
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


def decode_envelope(payload: Any, *, types: HandlerRegistry = registry) -> Envelope:
    """The envelope in ``payload``; raises MessageDecodingFailed for anything malformed."""
    try:
        if type(payload) is not dict:
            raise MessageDecodingFailed("An envelope must be a JSON object.")
        if payload.get("v") != WIRE_VERSION:
            raise MessageDecodingFailed(f"Unsupported wire format version {payload.get('v')!r}.")
        cls = types.resolve(payload["type"])
        message = decode_body(cls, payload["body"])
        stamps = [_decode_stamp(item) for item in payload.get("stamps", ())]
        return Envelope(message, stamps, message_id=uuid.UUID(payload["id"]))
    except MessageDecodingFailed:
        raise
    except Exception as exc:  # anything read from the wire may be wrong in any way
        raise MessageDecodingFailed(f"Malformed envelope: {type(exc).__name__}: {exc}") from exc


def _decode_stamp(item: Any) -> Stamp:
    stamp_type = STAMP_TYPES.get(item["name"])
    if stamp_type is None:
        raise MessageDecodingFailed(f"Unknown stamp {item['name']!r}.")
    return stamp_type.from_wire(item["data"])
