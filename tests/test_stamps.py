"""Stamps: small frozen values; the sent ones convert to and from JSON."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest

from django_messenger import stamps
from django_messenger.stamps import (
    STAMP_TYPES,
    DelayStamp,
    HandledStamp,
    OperationStamp,
    OutboxStamp,
    ReceivedStamp,
    RemoveStamp,
    SentStamp,
    Stamp,
    TrackStamp,
    UserStamp,
)

SENT_STAMPS = [
    DelayStamp(timedelta(milliseconds=1500)),
    DelayStamp(timedelta(0)),
    RemoveStamp(),
    OperationStamp("create"),
    OperationStamp("partial_update", fields=("title", "body"), lookup={"pk": "7"}),
    OperationStamp("destroy", fields=(), lookup={"pk": "7", "version": "3"}),
    UserStamp("42"),
    TrackStamp(owner="42", handlers=2),
    TrackStamp(owner=""),
]

UNSENT_STAMPS = [
    HandledStamp(result=object(), handler_name="app.handlers.handle"),
    SentStamp(transport="async", queue_name="default", broker_message_id="abc"),
    ReceivedStamp(queue_name="default", broker_message_id="abc", retries=2),
]


@pytest.mark.parametrize("stamp", SENT_STAMPS, ids=repr)
def test_a_sent_stamp_round_trips_through_json(stamp: Stamp) -> None:
    # Given a stamp that travels
    # When it goes to the wire, through JSON text, and back
    data = json.loads(json.dumps(stamp.to_wire()))
    restored = type(stamp).from_wire(data)

    # Then it is the same stamp
    assert restored == stamp
    assert type(stamp).sent() is True
    assert STAMP_TYPES[type(stamp).wire_name] is type(stamp)  # type: ignore[index]


def test_operation_stamp_lookup_and_fields_come_back_as_strings_and_a_tuple() -> None:
    restored = OperationStamp.from_wire({"operation": "update", "fields": ["a", "b"], "lookup": {"pk": 7}})

    assert restored == OperationStamp("update", fields=("a", "b"), lookup={"pk": "7"})
    assert isinstance(restored.fields, tuple)


def test_user_stamp_id_comes_back_as_a_string() -> None:
    assert UserStamp.from_wire({"id": 42}) == UserStamp("42")


@pytest.mark.parametrize("stamp", UNSENT_STAMPS, ids=lambda stamp: type(stamp).__name__)
def test_an_unsent_stamp_has_no_wire_name_and_cannot_go_to_the_wire(stamp: Stamp) -> None:
    assert type(stamp).wire_name is None
    assert type(stamp).sent() is False

    with pytest.raises(TypeError, match="never sent"):
        stamp.to_wire()
    with pytest.raises(TypeError, match="never sent"):
        type(stamp).from_wire({})


def test_stamp_types_holds_exactly_the_sent_stamps() -> None:
    # Given every stamp class the module defines
    defined = {
        value
        for value in vars(stamps).values()
        if isinstance(value, type) and issubclass(value, Stamp) and value is not Stamp
    }

    # Then the wire registry holds the sent ones, under their wire names, and nothing else
    assert {
        "delay": DelayStamp,
        "remove": RemoveStamp,
        "operation": OperationStamp,
        "user": UserStamp,
        "track": TrackStamp,
    } == STAMP_TYPES
    assert {cls for cls in defined if cls.sent()} == set(STAMP_TYPES.values())
    assert {cls for cls in defined if not cls.sent()} == {HandledStamp, SentStamp, ReceivedStamp, OutboxStamp}


@pytest.mark.parametrize(
    ("delay", "milliseconds"),
    [
        (timedelta(0), 0),
        (timedelta(milliseconds=100), 100),
        (timedelta(seconds=1, microseconds=999), 1000),
        (timedelta(minutes=5), 300_000),
        (timedelta(days=1), 86_400_000),
        (timedelta(seconds=-5), 0),
    ],
)
def test_delay_stamp_milliseconds_truncates_and_never_goes_negative(
    delay: timedelta, milliseconds: int
) -> None:
    assert DelayStamp(delay).milliseconds == milliseconds


def test_delay_stamp_wire_form_is_milliseconds() -> None:
    assert DelayStamp(timedelta(seconds=2)).to_wire() == {"ms": 2000}


@pytest.mark.parametrize("stamp", SENT_STAMPS + UNSENT_STAMPS, ids=repr)
def test_stamps_are_frozen(stamp: Stamp) -> None:
    field = dataclasses.fields(stamp)[0] if dataclasses.fields(stamp) else None
    name = field.name if field is not None else "anything"

    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(stamp, name, "changed")


def test_two_stamp_classes_cannot_share_a_wire_name() -> None:
    with pytest.raises(ValueError, match="'delay'"):

        class AnotherDelay(Stamp):
            wire_name = "delay"

    assert STAMP_TYPES["delay"] is DelayStamp


def test_a_new_sent_stamp_class_registers_its_wire_name() -> None:
    try:

        @dataclasses.dataclass(frozen=True)
        class TraceStamp(Stamp):
            trace_id: str
            wire_name = "test-trace"

            def to_wire(self) -> dict[str, Any]:
                return {"t": self.trace_id}

            @classmethod
            def from_wire(cls, data: Any) -> TraceStamp:
                return cls(data["t"])

        assert STAMP_TYPES["test-trace"] is TraceStamp
        assert TraceStamp.from_wire(TraceStamp("x").to_wire()) == TraceStamp("x")
    finally:
        STAMP_TYPES.pop("test-trace", None)
