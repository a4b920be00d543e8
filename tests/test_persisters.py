"""build_message: the keyword check that spares Signature.bind agrees with it, case by case."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest
from rest_framework import serializers

from django_messenger.persisters import build_message


@dataclass
class Plain:
    name: str
    count: int = 0


@dataclass
class WithFactory:
    tags: list[str] = field(default_factory=list)


class KeywordOnly:
    def __init__(self, *, name: str, flag: bool = False) -> None:
        self.name, self.flag = name, flag


class AnyKeywords:
    def __init__(self, name: str, **extra: Any) -> None:
        self.name, self.extra = name, extra


class PositionalOnly:
    def __init__(self, name: str, /, count: int = 0) -> None:
        self.name, self.count = name, count


class PositionalOnlyWithDefault:
    def __init__(self, name: str = "x", /, **extra: Any) -> None:
        self.name, self.extra = name, extra


CASES = [
    (cls, data)
    for cls in (Plain, WithFactory, KeywordOnly, AnyKeywords, PositionalOnly, PositionalOnlyWithDefault)
    for data in (
        {},
        {"name": "a"},
        {"name": "a", "count": 1},
        {"count": 1},
        {"name": "a", "other": 1},
        {"tags": ["t"]},
        {"name": "a", "flag": True},
    )
]


@pytest.mark.parametrize(
    ("cls", "data"), CASES, ids=[f"{c.__name__}-{'-'.join(d) or 'empty'}" for c, d in CASES]
)
def test_a_write_is_refused_exactly_when_signature_bind_refuses_it(cls: type, data: dict[str, Any]) -> None:
    # Given what Python itself says of a keyword call with these data
    try:
        inspect.signature(cls).bind(**data)
        fits = True
    except TypeError:
        fits = False
    # When the message is built from them
    serializer = serializers.Serializer()
    if fits:
        # Then it is built when they fit
        assert isinstance(build_message(serializer, data, cls), cls)
    else:
        # And refused as the request's fault (a 400) when they do not
        with pytest.raises(serializers.ValidationError):
            build_message(serializer, data, cls)
