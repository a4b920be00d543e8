"""The JSON wire format: exact round-trips, strict decoding, nothing imported by name."""

from __future__ import annotations

import datetime as dt
import enum
import importlib
import json
import math
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.db import models
from django.utils import module_loading
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_messenger import Envelope, MessageDecodingFailed
from django_messenger.bounds import MAX_DEPTH, MAX_ITEMS
from django_messenger.encoding import (
    WIRE_VERSION,
    decode_envelope,
    decode_value,
    encode_envelope,
    encode_value,
)
from django_messenger.exceptions import MessageEncodingFailed
from django_messenger.message_types import message_types
from django_messenger.stamps import (
    DelayStamp,
    HandledStamp,
    OperationStamp,
    ReceivedStamp,
    RemoveStamp,
    SentStamp,
    UserStamp,
)
from tests.testapp.messages import Address, Everything, Ping, PlainGreeting
from tests.testapp.models import Article

PARIS = ZoneInfo("Europe/Paris")


# -- helpers ----------------------------------------------------------------------


def through_the_wire(value: Any) -> Any:
    """``value`` encoded, written as strict JSON text, read back and decoded."""
    text = json.dumps(encode_value(value), allow_nan=False)
    return decode_value(json.loads(text))


def envelope_through_the_wire(envelope: Envelope) -> Envelope:
    text = json.dumps(encode_envelope(envelope), allow_nan=False)
    return decode_envelope(json.loads(text))


def assert_same(decoded: Any, original: Any) -> None:
    """Equal, of the same type all the way down, and alike where ``==`` is too lenient."""
    assert type(decoded) is type(original), (decoded, original)
    if isinstance(original, float):
        if math.isnan(original):
            assert math.isnan(decoded)
        else:
            assert decoded == original
            assert math.copysign(1.0, decoded) == math.copysign(1.0, original)  # -0.0 stays -0.0
    elif isinstance(original, Decimal):
        # Decimal('1.10') == Decimal('1.1'): compare sign, digits and exponent instead
        assert decoded.as_tuple() == original.as_tuple()
    elif isinstance(original, dt.datetime):
        # Same wall-clock time and same UTC offset. (== across time zones is False for
        # ambiguous wall times, PEP 495, so it is not the test here.)
        assert decoded.replace(tzinfo=None) == original.replace(tzinfo=None)
        assert decoded.utcoffset() == original.utcoffset()
    elif isinstance(original, dt.time):
        assert decoded.replace(tzinfo=None) == original.replace(tzinfo=None)
        assert decoded.utcoffset() == original.utcoffset()
    elif isinstance(original, list | tuple):
        assert len(decoded) == len(original)
        for decoded_item, original_item in zip(decoded, original, strict=True):
            assert_same(decoded_item, original_item)
    elif isinstance(original, dict):
        assert list(decoded) == list(original)
        for key in original:
            assert_same(decoded[key], original[key])
    else:
        assert decoded == original


def a_valid_payload(message: Any = None) -> dict[str, Any]:
    return encode_envelope(Envelope(message if message is not None else Ping("hi")))


@pytest.fixture
def no_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any import by name during the test fails it."""

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"decoding imported {name!r}")

    monkeypatch.setattr(module_loading, "import_string", refuse)
    monkeypatch.setattr(module_loading, "import_module", refuse)
    monkeypatch.setattr(importlib, "import_module", refuse)


def an_everything(**changes: Any) -> Everything:
    values: dict[str, Any] = {
        "text": 'héllo ✓ \x00 "quoted"',
        "number": -(2**70),
        "ratio": 0.1,
        "flag": True,
        "nothing": None,
        "amount": Decimal("1234.5600"),
        "at": dt.datetime(2024, 3, 30, 14, 30, 15, 123456, tzinfo=PARIS),
        "day": dt.date(1999, 12, 31),
        "clock": dt.time(23, 59, 59, 999999),
        "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "items": [1, 2, 3],
        "mapping": {"a": Decimal("0.1"), "$type": Decimal("2")},
        "optional": "here",
        "address": Address("1 Main St", "Springfield"),
        "addresses": [Address("a", "b"), Address("c", "d")],
    }
    values.update(changes)
    return Everything(**values)


# -- scalar values ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        'text with "quotes" and \\ and unicode é ✓ 𝄞',
        0,
        -1,
        2**64 + 1,
        True,
        False,
        None,
        0.0,
        -0.0,
        0.1,
        1e308,
        5e-324,
        -2.5,
    ],
    ids=repr,
)
def test_json_values_round_trip_as_themselves(value: Any) -> None:
    # JSON's own types need no tag: what is encoded is the value itself
    assert encode_value(value) == value
    assert_same(through_the_wire(value), value)


def test_booleans_stay_booleans_and_do_not_become_ints() -> None:
    assert through_the_wire(True) is True
    assert through_the_wire([False, 0, 1, True]) == [False, 0, 1, True]
    assert [type(item) for item in through_the_wire([False, 0, 1, True])] == [bool, int, int, bool]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=repr)
def test_non_finite_floats_are_tagged_and_round_trip(value: float) -> None:
    encoded = encode_value(value)

    assert encoded["$type"] == "float"
    decoded = through_the_wire(value)
    assert type(decoded) is float
    if math.isnan(value):
        assert math.isnan(decoded)
    else:
        assert decoded == value


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "1.10",
        "1.1",
        "-0",
        "-0.00",
        "1E+3",
        "1.000000000000000000000000000001",
        "1e-30",
        "Infinity",
        "-Infinity",
    ],
)
def test_decimals_round_trip_with_their_exponent(value: str) -> None:
    original = Decimal(value)

    decoded = through_the_wire(original)

    assert_same(decoded, original)
    assert str(decoded) == str(original)


def test_decimal_one_point_ten_keeps_its_trailing_zero() -> None:
    decoded = through_the_wire(Decimal("1.10"))

    assert str(decoded) == "1.10"
    assert decoded.as_tuple().exponent == -2


def test_decimal_nan_round_trips_as_a_nan() -> None:
    # NaN != NaN, so compare what it is, not with ==
    decoded = through_the_wire(Decimal("NaN"))

    assert isinstance(decoded, Decimal)
    assert decoded.is_qnan()


def test_decimal_signaling_nan_round_trips_as_a_signaling_nan() -> None:
    decoded = through_the_wire(Decimal("-sNaN"))

    assert decoded.is_snan()
    assert decoded.is_signed()


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
        dt.datetime(2024, 7, 1, 12, 0, tzinfo=PARIS),  # summer: +02:00
        dt.datetime(2024, 1, 1, 12, 0, tzinfo=PARIS),  # winter: +01:00
        dt.datetime(2021, 11, 7, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),  # ambiguous hour
        dt.datetime(2024, 3, 31, 2, 30, tzinfo=PARIS),  # imaginary hour (DST gap)
        dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))),
        dt.datetime(2024, 1, 2, 3, 4, 5, 678901),  # naive
        dt.datetime(1, 1, 1),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ],
    ids=str,
)
def test_datetimes_round_trip_with_microseconds_and_offset(value: dt.datetime) -> None:
    decoded = through_the_wire(value)

    assert_same(decoded, value)
    assert decoded.microsecond == value.microsecond
    assert (decoded.tzinfo is None) == (value.tzinfo is None)


def test_an_aware_datetime_is_the_same_instant_after_the_trip() -> None:
    value = dt.datetime(2024, 7, 1, 12, 0, 0, 1, tzinfo=PARIS)

    decoded = through_the_wire(value)

    assert decoded == value
    assert decoded.astimezone(dt.UTC) == dt.datetime(2024, 7, 1, 10, 0, 0, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "value",
    [
        dt.date(2024, 2, 29),
        dt.date(1, 1, 1),
        dt.time(0, 0),
        dt.time(23, 59, 59, 999999),
        dt.time(8, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
        dt.timedelta(0),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
        dt.timedelta(days=999999999, seconds=86399, microseconds=999999),
        dt.timedelta.min,
    ],
    ids=repr,
)
def test_dates_times_and_timedeltas_round_trip(value: Any) -> None:
    assert_same(through_the_wire(value), value)


def test_a_date_is_not_confused_with_a_datetime() -> None:
    assert type(through_the_wire(dt.date(2024, 1, 1))) is dt.date
    assert type(through_the_wire(dt.datetime(2024, 1, 1))) is dt.datetime


def test_uuids_round_trip() -> None:
    value = uuid.uuid4()

    assert through_the_wire(value) == value
    assert isinstance(through_the_wire(value), uuid.UUID)


@pytest.mark.parametrize("value", [b"", b"\x00\xff binary", bytes(range(256))], ids=len)
def test_bytes_round_trip(value: bytes) -> None:
    assert_same(through_the_wire(value), value)


# -- containers -------------------------------------------------------------------


def test_tuples_sets_and_frozensets_keep_their_type() -> None:
    value = [(1, "a", (2.5,)), {1, 2, "three"}, frozenset({(1, 2), "x"}), ()]

    decoded = through_the_wire(value)

    assert decoded == value
    assert [type(item) for item in decoded] == [tuple, set, frozenset, tuple]
    assert type(decoded[0][2]) is tuple


def test_lists_and_string_keyed_dicts_travel_untagged() -> None:
    value = {"a": [1, {"b": None}], "c": {}}

    assert encode_value(value) == value
    assert through_the_wire(value) == value


def test_dicts_with_int_keys_keep_their_keys() -> None:
    value = {1: "one", 2: {3: "three"}, -4: [5]}

    decoded = through_the_wire(value)

    assert decoded == value
    assert all(type(key) is int for key in decoded)


def test_dicts_with_mixed_and_non_string_keys_round_trip() -> None:
    value = {"a": 1, 2: "b", (3, 4): "tuple key", None: 0, True: "bool", Decimal("1.5"): "dec"}

    decoded = through_the_wire(value)

    assert decoded == value
    assert list(decoded) == list(value)
    assert type(list(decoded)[3]) is type(None)


def test_a_dict_with_its_own_type_key_is_not_mistaken_for_a_tagged_value() -> None:
    # Given a user dict that looks exactly like a tagged decimal
    value = {"$type": "decimal", "$value": "1.5"}

    # When it travels
    decoded = through_the_wire(value)

    # Then it comes back as that dict, not as Decimal('1.5')
    assert decoded == value
    assert type(decoded) is dict


def test_a_dict_with_a_type_key_naming_an_object_is_not_resolved() -> None:
    value = {"$type": "object", "class": "os.system", "$value": {"command": "true"}}

    assert through_the_wire(value) == value


def test_a_dict_with_only_a_value_key_round_trips() -> None:
    value = {"$value": 1}

    assert through_the_wire(value) == value


def test_subclasses_of_str_and_int_travel_as_their_value() -> None:
    class Colour(models.TextChoices):
        RED = "red"

    class Size(enum.IntEnum):
        BIG = 3

    decoded = through_the_wire([Colour.RED, Size.BIG])

    assert decoded == ["red", 3]
    assert [type(item) for item in decoded] == [str, int]


# -- property-based ---------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.decimals(allow_nan=True)
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | st.binary()
)
_keys = st.text() | st.sampled_from(["$type", "$value", "class"]) | st.integers()
_hashables = st.none() | st.booleans() | st.integers() | st.text() | st.uuids() | st.dates()

_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(_keys, children, max_size=4)
        | st.sets(_hashables, max_size=4)
        | st.frozensets(_hashables, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_any_nested_value_round_trips_exactly(value: Any) -> None:
    assert_same(through_the_wire(value), value)


@settings(max_examples=100, deadline=None)
@given(_values)
def test_any_encoded_value_is_strict_json(value: Any) -> None:
    # No default=, no NaN: the encoded form is plain JSON data
    json.dumps(encode_value(value), allow_nan=False)


# -- messages ---------------------------------------------------------------------


def test_a_dataclass_message_with_every_field_type_round_trips() -> None:
    # Given a message with every wire type, nested dataclasses included
    message = an_everything()
    envelope = Envelope(message, [OperationStamp("create")])

    # When it travels
    decoded = envelope_through_the_wire(envelope)

    # Then the same message comes back, with the same id and stamps
    assert decoded.message == message
    assert decoded.message_id == envelope.message_id
    assert decoded.stamps == (OperationStamp("create"),)
    assert type(decoded.message.address) is Address
    assert [type(address) for address in decoded.message.addresses] == [Address, Address]
    assert_same(decoded.message.amount, message.amount)
    assert_same(decoded.message.at, message.at)
    assert_same(decoded.message.mapping, message.mapping)


def test_optional_fields_left_at_none_round_trip() -> None:
    message = an_everything(optional=None, address=None, addresses=[])

    decoded = envelope_through_the_wire(Envelope(message)).message

    assert decoded == message
    assert decoded.optional is None
    assert decoded.address is None


def test_a_dataclass_message_is_encoded_as_valid_json() -> None:
    payload = encode_envelope(Envelope(an_everything(ratio=math.nan)))

    text = json.dumps(payload, allow_nan=False)  # no default=: every value is JSON already

    assert json.loads(text) == payload
    assert set(payload) == {"v", "id", "type", "body", "stamps"}
    assert payload["v"] == WIRE_VERSION
    assert payload["type"] == "testapp.Everything"


def test_a_nested_dataclass_travels_as_a_tagged_object_with_its_registered_name() -> None:
    encoded = encode_value(Address("1 Main St", "Springfield"))

    assert encoded == {
        "$type": "object",
        "class": "testapp.Address",
        "$value": {"street": "1 Main St", "city": "Springfield"},
    }


def test_a_plain_class_message_round_trips_under_its_messenger_name() -> None:
    envelope = Envelope(PlainGreeting("Ada"))

    payload = encode_envelope(envelope)
    decoded = envelope_through_the_wire(envelope)

    assert payload["type"] == "testapp.greeting"
    assert payload["body"] == {"name": "Ada"}
    assert type(decoded.message) is PlainGreeting
    assert decoded.message == PlainGreeting("Ada")


def test_unsent_stamps_are_left_out_and_sent_ones_round_trip() -> None:
    # Given an envelope with stamps of both kinds
    sent = [
        DelayStamp(dt.timedelta(seconds=3)),
        RemoveStamp(),
        OperationStamp("partial_update", ("title",), {"pk": "3"}),
        UserStamp("9"),
    ]
    unsent = [
        HandledStamp(result=object(), handler_name="x"),
        SentStamp("async", "default", "m1"),
        ReceivedStamp("default", "m1"),
    ]
    envelope = Envelope(Ping("hi"), [unsent[0], *sent[:2], unsent[1], *sent[2:], unsent[2]])

    # When it travels
    payload = encode_envelope(envelope)
    decoded = envelope_through_the_wire(envelope)

    # Then only the sent stamps are on the wire, in their order
    assert [item["name"] for item in payload["stamps"]] == ["delay", "remove", "operation", "user"]
    assert decoded.stamps == tuple(sent)


# -- model instances ----------------------------------------------------------------


def test_an_unsaved_model_instance_stays_new() -> None:
    # Given an article that was never saved
    article = Article(title="Draft", body="text", price=Decimal("9.90"))

    # When it travels
    decoded = envelope_through_the_wire(Envelope(article)).message

    # Then it is still unsaved, with the same field values
    assert type(decoded) is Article
    assert decoded.pk is None
    assert decoded._state.adding is True
    assert (decoded.title, decoded.body) == ("Draft", "text")
    assert_same(decoded.price, Decimal("9.90"))
    assert decoded.get_deferred_fields() == set()


@pytest.mark.django_db
def test_a_saved_model_instance_keeps_its_pk_fk_and_state() -> None:
    # Given a saved article with an author
    author = get_user_model().objects.create(username="ada")
    published = dt.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=dt.UTC)
    article = Article.objects.create(title="T", price=Decimal("1.50"), published=published, author=author)
    article.refresh_from_db()

    # When it travels
    decoded = envelope_through_the_wire(Envelope(article)).message

    # Then it is a saved instance of the same row
    assert decoded.pk == article.pk
    assert decoded._state.adding is False
    assert decoded._state.db == "default"
    assert decoded.author_id == author.pk
    assert decoded.published == published
    assert_same(decoded.price, Decimal("1.50"))
    # and its foreign key loads from the database
    assert decoded.author == author


@pytest.mark.django_db
def test_a_saved_model_instance_can_be_saved_again_as_an_update() -> None:
    article = Article.objects.create(title="Before")
    decoded = envelope_through_the_wire(Envelope(article)).message

    decoded.title = "After"
    decoded.save()

    assert Article.objects.count() == 1
    assert Article.objects.get().title == "After"


@pytest.mark.django_db
def test_deferred_fields_stay_deferred_after_the_trip() -> None:
    # Given an article loaded with only its title
    Article.objects.create(title="T", body="long body", price=Decimal("3.00"))
    article = Article.objects.only("title").get()
    assert article.get_deferred_fields() == {"body", "price", "published", "author_id"}

    # When it travels
    payload = encode_envelope(Envelope(article))
    decoded = envelope_through_the_wire(Envelope(article)).message

    # Then only the loaded fields were sent, and the others are still deferred
    assert set(payload["body"]["fields"]) == {"id", "title"}
    assert decoded.get_deferred_fields() == {"body", "price", "published", "author_id"}
    assert decoded.title == "T"
    # and a deferred field still loads on access
    assert decoded.body == "long body"


def test_a_model_instance_body_names_its_fields_by_attname() -> None:
    payload = encode_envelope(Envelope(Article(title="T", author_id=5)))

    assert payload["type"] == "testapp.Article"
    assert payload["body"]["fields"]["author_id"] == 5
    assert "author" not in payload["body"]["fields"]
    assert payload["body"]["adding"] is True


# -- decoding failures --------------------------------------------------------------


def with_changes(**changes: Any) -> dict[str, Any]:
    payload = a_valid_payload()
    payload.update(changes)
    return payload


def without(key: str) -> dict[str, Any]:
    payload = a_valid_payload()
    del payload[key]
    return payload


def with_ping_text(value: Any) -> dict[str, Any]:
    return with_changes(body={"text": value})


MALFORMED = {
    "not an object: list": [],
    "not an object: string": "{}",
    "not an object: None": None,
    "type os.system": with_changes(type="os.system"),
    "type builtins.eval": with_changes(type="builtins.eval"),
    "type subprocess.Popen": with_changes(type="subprocess.Popen"),
    "type by module path of a registered class": with_changes(type="tests.testapp.messages.Ping"),
    "type not a string": with_changes(type=["testapp.Ping"]),
    "type missing": without("type"),
    "unknown stamp": with_changes(stamps=[{"name": "evil", "data": {}}]),
    "stamp without data": with_changes(stamps=[{"name": "delay"}]),
    "stamp with bad data": with_changes(stamps=[{"name": "delay", "data": {"ms": "soon"}}]),
    "stamps not a list": with_changes(stamps="delay"),
    "stamps null": with_changes(stamps=None),
    "version 2": with_changes(v=2),
    "version as a string": with_changes(v="1"),
    "version missing": without("v"),
    "body a list": with_changes(body=["hi"]),
    "body a string": with_changes(body="hi"),
    "body null": with_changes(body=None),
    "body missing": without("body"),
    "missing dataclass field": with_changes(body={}),
    "unknown dataclass field": with_changes(body={"text": "hi", "admin": True}),
    "malformed uuid id": with_changes(id="not-a-uuid"),
    "uuid id as a number": with_changes(id=123),
    "uuid id null": with_changes(id=None),
    "id missing": without("id"),
    "nested object of an unregistered class": with_ping_text(
        {"$type": "object", "class": "os.system", "$value": {}}
    ),
    "nested object without a class": with_ping_text({"$type": "object", "$value": {}}),
    "nested object with a body that is not an object": with_ping_text(
        {"$type": "object", "class": "testapp.Address", "$value": ["a", "b"]}
    ),
    "nested dataclass with an unknown field": with_ping_text(
        {"$type": "object", "class": "testapp.Address", "$value": {"street": "a", "city": "b", "x": 1}}
    ),
    "unknown value tag": with_ping_text({"$type": "pickle", "$value": "gASVAAAA"}),
    "value tag not a string": with_ping_text({"$type": ["decimal"], "$value": "1"}),
    "malformed datetime": with_ping_text({"$type": "datetime", "$value": "2024-13-01T00:00:00"}),
    "malformed uuid value": with_ping_text({"$type": "uuid", "$value": "xyz"}),
    "malformed bytes": with_ping_text({"$type": "bytes", "$value": "!!not base64!!"}),
    "malformed timedelta": with_ping_text({"$type": "timedelta", "$value": [1]}),
    "malformed float": with_ping_text({"$type": "float", "$value": "lots"}),
    "set of unhashable items": with_ping_text({"$type": "set", "$value": [[1]]}),
    "dict pair of three": with_ping_text({"$type": "dict", "$value": [[1, 2, 3]]}),
    "model body without fields": with_ping_text(
        {"$type": "object", "class": "testapp.Article", "$value": {}}
    ),
    "model body with an unknown field": with_ping_text(
        {"$type": "object", "class": "testapp.Article", "$value": {"fields": {"evil": 1}, "adding": True}}
    ),
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_envelope_raises_decoding_failed_and_imports_nothing(
    payload: Any, no_imports: None
) -> None:
    with pytest.raises(MessageDecodingFailed):
        decode_envelope(payload)


def test_an_unknown_type_name_is_named_in_the_error() -> None:
    with pytest.raises(MessageDecodingFailed, match="os.system"):
        decode_envelope(with_changes(type="os.system"))


def test_decoding_a_wrong_version_names_the_version() -> None:
    with pytest.raises(MessageDecodingFailed, match="version 2"):
        decode_envelope(with_changes(v=2))


def test_decoding_a_valid_payload_imports_nothing(no_imports: None) -> None:
    payload = encode_envelope(Envelope(an_everything()))

    assert decode_envelope(json.loads(json.dumps(payload))).message == an_everything()


def test_resolve_of_an_importable_name_does_not_import_it(no_imports: None) -> None:
    with pytest.raises(Exception, match="Unknown message type"):
        message_types.resolve("json.loads")


def test_a_malformed_decimal_raises_decoding_failed() -> None:
    with pytest.raises(MessageDecodingFailed):
        decode_envelope(with_ping_text({"$type": "decimal", "$value": "not a number"}))


def test_an_out_of_range_timedelta_raises_decoding_failed() -> None:
    with pytest.raises(MessageDecodingFailed):
        decode_envelope(with_ping_text({"$type": "timedelta", "$value": [10**10, 0, 0]}))


def test_a_deeply_nested_body_raises_decoding_failed() -> None:
    # Given a body that json.loads reads without trouble
    depth = 600
    payload = json.loads(json.dumps(with_ping_text(None)).replace("null", "[" * depth + "]" * depth))

    # Then decoding it is a decoding failure (poison: dead-lettered, not retried)
    with pytest.raises(MessageDecodingFailed):
        decode_envelope(payload)


# -- encoding failures --------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "builtins.object"),
        (lambda: None, "builtins.function"),
        (Opaque(), "tests.test_encoding.Opaque"),
        (bytearray(b"x"), "builtins.bytearray"),
        (1 + 2j, "builtins.complex"),
    ],
    ids=["object", "lambda", "plain instance", "bytearray", "complex"],
)
def test_an_unsupported_value_raises_encoding_failed_naming_its_type(value: Any, type_name: str) -> None:
    with pytest.raises(MessageEncodingFailed, match=type_name):
        encode_value(value)


class Slotted:
    """A plain class whose instances have no __dict__."""

    __slots__ = ("name",)
    messenger_name = "tests.slotted"

    def __init__(self, name: str) -> None:
        self.name = name


def test_a_plain_class_with_slots_raises_encoding_failed_naming_it() -> None:
    message_types.register(Slotted)
    try:
        with pytest.raises(MessageEncodingFailed, match="Slotted"):
            encode_envelope(Envelope(Slotted("Ada")))
    finally:
        message_types._names.pop(message_types._types.pop("tests.slotted"), None)


def test_an_unsupported_value_deep_in_a_message_fails_the_whole_encoding() -> None:
    envelope = Envelope(Ping(text=[1, {"a": (2, object())}]))  # type: ignore[arg-type]

    with pytest.raises(MessageEncodingFailed, match="builtins.object"):
        encode_envelope(envelope)


def test_encoding_failed_is_a_type_error() -> None:
    # So code that guards JSON encoding with `except TypeError` still works
    with pytest.raises(TypeError):
        encode_value(object())


# -- what the wire may claim: field types, classes, databases, bounds ----------------


class Mood(enum.Enum):
    HAPPY = "happy"
    GRUMPY = "grumpy"


@dataclass
class Typed:
    """A message whose fields are checked against their annotations on decoding."""

    messenger_name = "tests.typed"

    count: int
    tags: tuple[str, ...] = ()
    seen: frozenset[int] = frozenset()
    mood: Mood = Mood.HAPPY
    level: Literal["low", "high"] = "low"
    home: Address | None = None
    extra: Any = None


class Greeter:
    """A plain class with a method, an attribute and a property."""

    messenger_name = "tests.greeter"

    def __init__(self, name: str) -> None:
        self.name = name

    def greet(self) -> str:
        return f"hello {self.name}"


@pytest.fixture
def typed(scratch: Any) -> None:
    message_types.register(Typed)
    message_types.register(Greeter)


def typed_payload(**body: Any) -> dict[str, Any]:
    payload = encode_envelope(Envelope(Typed(count=1)))
    payload["body"].update(body)
    return json.loads(json.dumps(payload))


def test_a_typed_message_round_trips_with_its_enum_tuple_and_frozenset(typed: None) -> None:
    message = Typed(count=2, tags=("a", "b"), seen=frozenset({1, 2}), mood=Mood.GRUMPY, level="high")

    decoded = envelope_through_the_wire(Envelope(message)).message

    assert decoded == message
    assert decoded.mood is Mood.GRUMPY


def test_a_list_sent_for_a_tuple_field_arrives_as_a_tuple(typed: None) -> None:
    decoded = decode_envelope(typed_payload(tags=["a", "b"])).message

    assert decoded.tags == ("a", "b")


FORGED = {
    "a string for an int": {"count": "1"},
    "a bool for an int": {"count": True},
    "a float for an int": {"count": 1.5},
    "a null for an int": {"count": None},
    "a number in a tuple of strings": {"tags": {"$type": "tuple", "$value": ["a", 1]}},
    "a string for a frozenset": {"seen": "12"},
    "an unknown enum value": {"mood": "furious"},
    "a value outside the literal": {"level": "medium"},
    "a registered class where another is annotated": {
        "home": {"$type": "object", "class": "testapp.Ping", "$value": {"text": "hi"}}
    },
    "a nested object whose own field has the wrong type": {
        "home": {"$type": "object", "class": "testapp.Address", "$value": {"street": 1, "city": "b"}}
    },
}


@pytest.mark.parametrize("body", FORGED.values(), ids=FORGED.keys())
def test_a_value_that_does_not_fit_its_field_is_poison(typed: None, body: dict[str, Any]) -> None:
    with pytest.raises(MessageDecodingFailed):
        decode_envelope(typed_payload(**body))


def test_a_ping_whose_text_is_not_a_string_is_poison() -> None:
    with pytest.raises(MessageDecodingFailed, match="Expected a str"):
        decode_envelope(with_ping_text(["not", "text"]))


def test_a_field_annotated_any_takes_any_wire_value(typed: None) -> None:
    decoded = decode_envelope(typed_payload(extra={"$type": "set", "$value": [1, 2]})).message

    assert decoded.extra == {1, 2}


def test_a_plain_class_round_trips_and_keeps_its_methods(typed: None) -> None:
    decoded = envelope_through_the_wire(Envelope(Greeter("Ada"))).message

    assert decoded.name == "Ada"
    assert decoded.greet() == "hello Ada"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Ada", "greet": "not a method any more"},
        {"name": "Ada", "__class__": "x"},
        {"name": "Ada", "is_staff": True},
        {"name": 1},
    ],
    ids=["shadows a method", "dunder", "undeclared attribute", "wrong type"],
)
def test_a_plain_class_gets_only_its_declared_attributes(typed: None, body: dict[str, Any]) -> None:
    payload = encode_envelope(Envelope(Greeter("Ada")))
    payload["body"] = body

    with pytest.raises(MessageDecodingFailed):
        decode_envelope(payload)


def test_a_plain_class_with_an_undeclared_attribute_fails_at_dispatch(typed: None) -> None:
    greeter = Greeter("Ada")
    greeter.cache = {}  # type: ignore[attr-defined]

    with pytest.raises(MessageEncodingFailed, match=r"\['cache'\]"):
        encode_envelope(Envelope(greeter))


def test_a_model_field_of_the_wrong_type_is_poison() -> None:
    payload = encode_envelope(Envelope(Article(title="T")))
    payload["body"]["fields"]["title"] = ["not", "a", "title"]

    with pytest.raises(MessageDecodingFailed, match="Expected a str"):
        decode_envelope(payload)


def test_a_model_foreign_key_takes_the_type_of_its_target() -> None:
    payload = encode_envelope(Envelope(Article(title="T", author_id=5)))
    payload["body"]["fields"]["author_id"] = "5"

    with pytest.raises(MessageDecodingFailed, match="Expected an int"):
        decode_envelope(payload)


class ToReplica:
    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "replica"


def test_a_model_instance_takes_its_database_from_the_router_not_the_wire(settings: Any) -> None:
    # Given a saved article whose envelope claims another database
    settings.DATABASE_ROUTERS = [ToReplica()]
    article = Article(title="T")
    article._state.adding = False
    article._state.db = "default"
    payload = encode_envelope(Envelope(article))
    payload["body"]["db"] = "forged"

    # When it is decoded
    decoded = decode_envelope(payload).message

    # Then its database is the router's choice
    assert decoded._state.db == "replica"
    assert "db" not in encode_envelope(Envelope(article))["body"]


def test_a_new_model_instance_has_no_database_whatever_the_wire_says() -> None:
    payload = encode_envelope(Envelope(Article(title="T")))
    payload["body"]["db"] = "forged"

    decoded = decode_envelope(payload).message

    assert decoded._state.db is None
    assert decoded._state.adding is True


def test_a_model_instance_whose_adding_is_not_a_bool_is_poison() -> None:
    payload = encode_envelope(Envelope(Article(title="T")))
    payload["body"]["adding"] = "yes"

    with pytest.raises(MessageDecodingFailed):
        decode_envelope(payload)


MERSENNE = 2**61 - 1  # ints that differ by a multiple of it share one hash value


def flood(tag: str, make: Any, count: int = 40_000) -> dict[str, Any]:
    items = [encode_value(make(k)) for k in range(1, count + 1)]
    if tag == "dict":
        items = [[item, 0] for item in items]
    return with_ping_text({"$type": tag, "$value": items})


@pytest.mark.parametrize(
    ("tag", "make"),
    [
        ("frozenset", lambda k: k * MERSENNE),
        ("set", lambda k: k * MERSENNE),
        ("dict", lambda k: k * MERSENNE),
        ("set", lambda k: Decimal(k * MERSENNE)),
        ("set", lambda k: (k * MERSENNE,)),
    ],
    ids=["frozenset of ints", "set of ints", "dict of int keys", "set of decimals", "set of tuples"],
)
def test_a_hash_flooding_set_fails_fast(tag: str, make: Any) -> None:
    # Given 40,000 distinct values that all share one hash (quadratic to put in a set: seconds of CPU)
    payload = json.loads(json.dumps(flood(tag, make)))

    # When it is decoded (timed in this process's CPU seconds, which other processes on a loaded
    # machine do not stretch as they stretch the wall clock: about 0.2 s here for the slowest case)
    started = time.process_time()
    with pytest.raises(MessageDecodingFailed, match="share one hash"):
        decode_envelope(payload)

    # Then it was refused before the set was built
    assert time.process_time() - started < 1.0


def test_a_set_with_a_few_equal_hashes_still_decodes() -> None:
    values = {-1, -2, 1, MERSENNE + 1}  # hash(-1) == hash(-2), hash(1) == hash(2**61)

    assert through_the_wire(values) == values


def nested_lists(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_the_bound_decodes_and_deeper_is_poison() -> None:
    assert decode_value(nested_lists(MAX_DEPTH)) == nested_lists(MAX_DEPTH)
    with pytest.raises(MessageDecodingFailed, match="deeper"):
        decode_value(nested_lists(MAX_DEPTH + 1))


@pytest.mark.parametrize(
    "value",
    [
        [0] * (MAX_ITEMS + 1),
        dict.fromkeys((str(n) for n in range(MAX_ITEMS + 1)), 0),
        {"$type": "tuple", "$value": [0] * (MAX_ITEMS + 1)},
    ],
    ids=["list", "object", "tuple"],
)
def test_a_container_over_the_item_bound_is_poison(value: Any) -> None:
    with pytest.raises(MessageDecodingFailed, match="items"):
        decode_envelope(with_ping_text(value))


_typed_messages = st.builds(
    Typed,
    count=st.integers(),
    tags=st.lists(st.text(max_size=5), max_size=4).map(tuple),
    seen=st.frozensets(st.integers(), max_size=6),
    mood=st.sampled_from(Mood),
    level=st.sampled_from(["low", "high"]),
    home=st.none() | st.builds(Address, st.text(max_size=5), st.text(max_size=5)),
    extra=st.none() | st.integers() | st.lists(st.text(max_size=3), max_size=3),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_typed_messages)
def test_any_typed_message_round_trips_exactly(typed: None, message: Typed) -> None:
    # (the fixture registers two types for the whole test; nothing to reset between inputs)
    decoded = envelope_through_the_wire(Envelope(message)).message

    assert decoded == message
    assert type(decoded.tags) is tuple and type(decoded.seen) is frozenset and type(decoded.mood) is Mood
