"""The Envelope: a message, its id and its stamps, immutable (after Symfony Messenger)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from django_messenger import Envelope
from django_messenger.stamps import DelayStamp, HandledStamp, OperationStamp, RemoveStamp
from tests.testapp.messages import Ping


def test_a_new_envelope_has_a_fresh_uuid_and_no_stamps() -> None:
    # Given two envelopes of the same message
    first = Envelope(Ping("hi"))
    second = Envelope(Ping("hi"))

    # Then each has an id of its own, and no stamps
    assert isinstance(first.message_id, uuid.UUID)
    assert first.message_id != second.message_id
    assert first.stamps == ()
    assert first.message == Ping("hi")


def test_an_explicit_message_id_is_kept() -> None:
    message_id = uuid.uuid4()

    envelope = Envelope(Ping("hi"), [RemoveStamp()], message_id=message_id)

    assert envelope.message_id == message_id
    assert envelope.stamps == (RemoveStamp(),)


def test_stamps_given_as_any_iterable_are_stored_as_a_tuple() -> None:
    envelope = Envelope(Ping("hi"), (stamp for stamp in [RemoveStamp(), DelayStamp(timedelta(seconds=1))]))

    assert envelope.stamps == (RemoveStamp(), DelayStamp(timedelta(seconds=1)))


@pytest.mark.parametrize("attribute", ["message", "message_id", "stamps", "something_new"])
def test_setting_an_attribute_raises(attribute: str) -> None:
    envelope = Envelope(Ping("hi"))

    with pytest.raises(AttributeError, match="immutable"):
        setattr(envelope, attribute, "changed")

    assert envelope.message == Ping("hi")


@pytest.mark.parametrize("attribute", ["message", "message_id", "stamps"])
def test_deleting_an_attribute_raises(attribute: str) -> None:
    envelope = Envelope(Ping("hi"))

    with pytest.raises(AttributeError, match="immutable"):
        delattr(envelope, attribute)

    assert getattr(envelope, attribute) is not None


def test_an_envelope_has_no_instance_dict() -> None:
    # __slots__: nothing can be smuggled in through __dict__ either
    assert not hasattr(Envelope(Ping("hi")), "__dict__")


def test_with_stamps_returns_a_new_envelope_and_leaves_the_original_alone() -> None:
    # Given an envelope with one stamp
    original = Envelope(Ping("hi"), [RemoveStamp()])

    # When stamps are added
    delay = DelayStamp(timedelta(seconds=5))
    operation = OperationStamp("create")
    stamped = original.with_stamps(delay, operation)

    # Then a new envelope has them after the old ones, with the same message and id
    assert stamped is not original
    assert stamped.stamps == (RemoveStamp(), delay, operation)
    assert stamped.message is original.message
    assert stamped.message_id == original.message_id
    # and the original is unchanged
    assert original.stamps == (RemoveStamp(),)


def test_with_no_stamps_is_an_equal_copy() -> None:
    original = Envelope(Ping("hi"), [RemoveStamp()])

    assert original.with_stamps() == original


def test_last_returns_the_newest_stamp_of_a_type_or_none() -> None:
    first, second = DelayStamp(timedelta(seconds=1)), DelayStamp(timedelta(seconds=2))
    envelope = Envelope(Ping("hi"), [first, RemoveStamp(), second])

    assert envelope.last(DelayStamp) is second
    assert envelope.last(RemoveStamp) == RemoveStamp()
    assert envelope.last(HandledStamp) is None


def test_all_returns_every_stamp_of_a_type_oldest_first() -> None:
    first, second = DelayStamp(timedelta(seconds=1)), DelayStamp(timedelta(seconds=2))
    envelope = Envelope(Ping("hi"), [first, RemoveStamp(), second])

    assert envelope.all(DelayStamp) == [first, second]
    assert envelope.all(RemoveStamp) == [RemoveStamp()]
    assert envelope.all(HandledStamp) == []


def test_last_and_all_match_subclasses_of_the_stamp_type() -> None:
    class SlowDelay(DelayStamp):
        pass

    slow = SlowDelay(timedelta(seconds=9))
    envelope = Envelope(Ping("hi"), [DelayStamp(timedelta(seconds=1)), slow])

    assert envelope.last(DelayStamp) is slow
    assert len(envelope.all(DelayStamp)) == 2


def test_without_drops_every_stamp_of_a_type_and_keeps_the_id() -> None:
    # Given an envelope with two delays and a remove stamp
    envelope = Envelope(
        Ping("hi"), [DelayStamp(timedelta(seconds=1)), RemoveStamp(), DelayStamp(timedelta(seconds=2))]
    )

    # When the delays are dropped
    stripped = envelope.without(DelayStamp)

    # Then only the remove stamp is left, on a new envelope with the same id
    assert stripped.stamps == (RemoveStamp(),)
    assert stripped.message_id == envelope.message_id
    assert stripped.message is envelope.message
    assert len(envelope.stamps) == 3


def test_without_a_type_that_is_absent_keeps_everything() -> None:
    envelope = Envelope(Ping("hi"), [RemoveStamp()])

    assert envelope.without(DelayStamp) == envelope


def test_envelopes_are_equal_when_id_message_and_stamps_are() -> None:
    message_id = uuid.uuid4()

    same = Envelope(Ping("hi"), [RemoveStamp()], message_id=message_id)
    other = Envelope(Ping("hi"), [RemoveStamp()], message_id=message_id)

    assert same == other
    assert hash(same) == hash(other)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda mid: Envelope(Ping("hi"), [RemoveStamp()]), id="another id"),
        pytest.param(lambda mid: Envelope(Ping("ho"), [RemoveStamp()], message_id=mid), id="another message"),
        pytest.param(lambda mid: Envelope(Ping("hi"), [], message_id=mid), id="other stamps"),
    ],
)
def test_envelopes_differ_when_id_message_or_stamps_differ(other) -> None:  # type: ignore[no-untyped-def]
    message_id = uuid.uuid4()
    envelope = Envelope(Ping("hi"), [RemoveStamp()], message_id=message_id)

    assert envelope != other(message_id)


def test_an_envelope_is_not_equal_to_something_else() -> None:
    envelope = Envelope(Ping("hi"))

    assert envelope != Ping("hi")
    assert envelope.__eq__(Ping("hi")) is NotImplemented


def test_repr_names_the_id_the_message_type_and_the_stamps() -> None:
    envelope = Envelope(Ping("hi"), [RemoveStamp(), DelayStamp(timedelta(seconds=1))])

    text = repr(envelope)

    assert text == f"<Envelope {envelope.message_id} Ping [RemoveStamp, DelayStamp]>"


def test_wrapping_an_envelope_raises() -> None:
    inner = Envelope(Ping("hi"))

    with pytest.raises(TypeError, match="with_stamps"):
        Envelope(inner)
