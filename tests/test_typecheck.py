"""Checks of decoded values against field annotations (django_messenger.typecheck)."""

from __future__ import annotations

import collections.abc
import datetime as dt
import enum
import typing
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, NewType, Optional, Union

import pytest
from django.db import models
from hypothesis import given
from hypothesis import strategies as st

from django_messenger import MessageDecodingFailed
from django_messenger.typecheck import checker_for, dataclass_checks, plain_class_checks
from tests.testapp.messages import Address, Ping

if typing.TYPE_CHECKING:
    from tests.testapp.messages import Shout  # resolvable only by type checkers


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(models.IntegerChoices):
    S = 1
    M = 2


@dataclass(frozen=True)
class HomeAddress(Address):
    pass


UserId = NewType("UserId", int)
NOW = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
ID = uuid.UUID(int=7)

ACCEPTED: list[tuple[Any, Any]] = [
    (str, "text"),
    (int, 3),
    (int, -(2**80)),
    (float, 1.5),
    (float, 3),  # an int where a float is declared, as in typing (JSON writes 3.0 as 3 elsewhere)
    (bool, False),
    (bytes, b"\x00"),
    (Decimal, Decimal("1.10")),
    (dt.datetime, NOW),
    (dt.date, dt.date(2024, 1, 2)),
    (dt.time, dt.time(1, 2)),
    (dt.timedelta, dt.timedelta(seconds=3)),
    (uuid.UUID, ID),
    (None, None),
    (type(None), None),
    (str | None, None),
    (str | None, "x"),
    (Optional[int], 1),  # noqa: UP045 - the old spelling is checked too
    (Union[int, str], "x"),  # noqa: UP007
    (list[int], [1, 2]),
    (list[Any], [1, "a", None]),
    (list, ["anything"]),
    (dict[str, Decimal], {"a": Decimal(1)}),
    (dict[int, list[str]], {1: ["a"]}),
    (dict, {"a": 1}),
    (collections.abc.Mapping[str, int], {"a": 1}),
    (collections.abc.Sequence[int], [1]),
    (tuple[int, ...], (1, 2)),
    (tuple[int, str], (1, "a")),
    (set[int], {1, 2}),
    (frozenset[str], frozenset({"a"})),
    (Address, Address("a", "b")),
    (Address, HomeAddress("a", "b")),  # a subclass of the annotated class
    (Address | None, None),
    (list[Address], [Address("a", "b")]),
    (Literal["a", "b"], "b"),
    (Literal[1], 1),
    (Annotated[int, "meta"], 5),
    (UserId, 5),
    (Any, object()),
    (object, [1]),
]

REFUSED: list[tuple[Any, Any]] = [
    (str, 1),
    (str, None),
    (str, ["text"]),
    (int, True),  # a bool is not an int here
    (int, 1.0),
    (int, "1"),
    (float, True),
    (float, "1.5"),
    (float, Decimal("1.5")),
    (bool, 1),
    (bytes, "AA=="),
    (Decimal, 1),
    (Decimal, "1.5"),
    (dt.datetime, dt.date(2024, 1, 2)),
    (dt.date, "2024-01-02"),
    (uuid.UUID, str(ID)),
    (None, 0),
    (str | None, 1),
    (Union[int, str], None),  # noqa: UP007
    (list[int], [1, "2"]),
    (list[int], (1, 2)),
    (list[int], {"a": 1}),
    (dict[str, int], {"a": "1"}),
    (dict[str, int], [["a", 1]]),
    (dict[int, int], {"1": 1}),
    (tuple[int, str], (1, 2)),
    (tuple[int, str], (1, "a", "b")),
    (tuple[int, ...], "12"),
    (set[int], {"a"}),
    (frozenset[int], 1),
    (Address, Ping("hi")),  # a registered type, but not the annotated one
    (Address, {"street": "a", "city": "b"}),
    (list[Address], [Ping("hi")]),
    (Address | None, Ping("hi")),
    (Literal["a", "b"], "c"),
    (Literal[1], True),
    (Literal[1], 1.0),
    (UserId, "5"),
]


@pytest.mark.parametrize(("hint", "value"), ACCEPTED, ids=[repr(case) for case in ACCEPTED])
def test_a_value_of_the_declared_type_is_accepted(hint: Any, value: Any) -> None:
    assert checker_for(hint)(value) == value


@pytest.mark.parametrize(("hint", "value"), REFUSED, ids=[repr(case) for case in REFUSED])
def test_a_value_of_another_type_is_refused(hint: Any, value: Any) -> None:
    with pytest.raises(MessageDecodingFailed):
        checker_for(hint)(value)


def test_a_list_becomes_the_declared_tuple_set_or_frozenset() -> None:
    # JSON has only lists: a sender that put a list in a tuple field still gets a tuple
    assert checker_for(tuple[int, ...])([1, 2]) == (1, 2)
    assert checker_for(tuple[int, str])([1, "a"]) == (1, "a")
    assert type(checker_for(set[int])([1, 2])) is set
    assert checker_for(frozenset[int])([1, 2]) == frozenset({1, 2})


def test_an_enum_member_is_rebuilt_from_its_value() -> None:
    assert checker_for(Color)("red") is Color.RED
    assert checker_for(Size)(2) is Size.M
    assert checker_for(list[Color])(["blue"]) == [Color.BLUE]


def test_an_unknown_enum_value_is_refused() -> None:
    with pytest.raises(MessageDecodingFailed, match="Color"):
        checker_for(Color)("green")


def test_a_literal_of_enum_members_gives_the_member() -> None:
    assert checker_for(Literal[Color.RED])("red") is Color.RED


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(), st.lists))
def test_int_accepts_exactly_the_ints_that_are_not_bools(value: Any) -> None:
    check = checker_for(int)
    if isinstance(value, int) and not isinstance(value, bool):
        assert check(value) == value
    else:
        with pytest.raises(MessageDecodingFailed):
            check(value)


@given(st.lists(st.integers() | st.text(), max_size=5))
def test_a_list_of_ints_accepts_a_list_only_when_every_item_is_an_int(value: list[Any]) -> None:
    check = checker_for(list[int])
    if all(type(item) is int for item in value):
        assert check(value) == value
    else:
        with pytest.raises(MessageDecodingFailed):
            check(value)


# -- classes ----------------------------------------------------------------------


@dataclass
class Loose:
    count: int = None  # type: ignore[assignment]  # sloppy, but common: None is its default
    later: Shout | None = None  # a name imported under TYPE_CHECKING only


def test_a_field_whose_default_is_none_accepts_none() -> None:
    checks = dataclass_checks(Loose)

    assert checks["count"](None) is None
    assert checks["count"](3) == 3
    with pytest.raises(MessageDecodingFailed):
        checks["count"]("3")


def test_a_field_whose_annotation_cannot_be_resolved_is_not_checked(caplog: pytest.LogCaptureFixture) -> None:
    checks = dataclass_checks(Loose)

    assert checks["later"]("anything") == "anything"
    assert "cannot be resolved" in caplog.text


class Plain:
    kind: str

    def __init__(self, name: str, size: int = 0, *args: Any, **kwargs: Any) -> None:
        self.name = name
        self.size = size
        self.kind = "plain"

    def greet(self) -> str:
        return f"hello {self.name}"

    @property
    def shout(self) -> str:
        return self.name.upper()


class Shadowing:
    def __init__(self, greet: str) -> None:  # a parameter named like a method
        self.greet = greet

    def greet(self) -> str:  # type: ignore[no-redef]  # noqa: F811
        return "hi"


def test_a_plain_class_takes_its_init_parameters_and_annotated_attributes_only() -> None:
    checks = plain_class_checks(Plain)

    assert set(checks) == {"name", "size", "kind"}
    assert checks["size"](3) == 3
    with pytest.raises(MessageDecodingFailed):
        checks["name"](3)


def test_a_plain_class_attribute_never_shadows_a_method() -> None:
    assert plain_class_checks(Shadowing) == {}
