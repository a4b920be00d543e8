"""BoundedJSONEncoder refuses to parse an oversized message; W005 when a project does not use it."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.encoder import JSONEncoder, PickleEncoder
from dramatiq.errors import DecodeError

from django_messenger import Envelope
from django_messenger.checks import check_encoder
from django_messenger.dramatiq_encoder import (
    BODY_SIZE,
    BoundedJSONEncoder,
    body_bounds_envelope,
    max_body_size,
    needs_measuring,
)
from django_messenger.encoding import encode_envelope
from django_messenger.limits import envelope_size
from django_messenger.locator import locator
from django_messenger.testing import drain
from django_messenger.transports.dramatiq.binding import binding
from tests.testapp.messages import Ping

LIMIT = 10_000
PING = "tests.testapp.handlers.handle"


@pytest.fixture
def small_limit(settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": LIMIT}


@pytest.fixture
def encoder_in_use() -> Iterator[Any]:
    """Swap Dramatiq's global encoder for the test, and put the project's back after."""
    before = dramatiq.get_encoder()
    yield dramatiq.set_encoder
    dramatiq.set_encoder(before)


def body_of(text: str, **options: Any) -> bytes:
    payload = encode_envelope(Envelope(Ping(text)))
    message: Message[Any] = Message(
        queue_name="default", actor_name="handle", args=(payload,), kwargs={}, options=options
    )
    return message.encode()


def test_the_test_settings_use_it() -> None:
    assert isinstance(dramatiq.get_encoder(), BoundedJSONEncoder)


def test_a_message_within_the_bound_decodes_as_with_dramatiqs_encoder(small_limit: None) -> None:
    body = body_of("hello")

    assert BoundedJSONEncoder().decode(body) == JSONEncoder().decode(body)


def test_a_body_over_the_bound_is_refused_unread(small_limit: None) -> None:
    # Given a body over the bound that is not even JSON (parsing it would fail otherwise)
    body = b"[" * (max_body_size() + 1)

    # Then it is refused for its size, not for its syntax
    with pytest.raises(DecodeError, match="more than"):
        BoundedJSONEncoder().decode(body)


def test_a_huge_body_is_refused_at_once(small_limit: None) -> None:
    body = body_of("x" * 50_000_000)

    started = time.perf_counter()
    with pytest.raises(DecodeError) as raised:
        BoundedJSONEncoder().decode(body)

    # (parsing 50 MB takes about a second here: a generous bound still tells the two apart)
    assert time.perf_counter() - started < 0.5
    assert len(str(raised.value)) < 200  # the log line does not repeat the body


def test_an_envelope_at_the_limit_still_parses_after_retries_added_a_traceback(small_limit: None) -> None:
    # Given an envelope of exactly MAX_MESSAGE_SIZE bytes
    text = "x" * (LIMIT - envelope_size(encode_envelope(Envelope(Ping("")))))
    assert envelope_size(encode_envelope(Envelope(Ping(text)))) == LIMIT
    # and the options Dramatiq's Retries middleware writes: a 30-frame traceback with a long error
    try:
        raise ValueError("e" * 5_000)
    except ValueError:
        trace = traceback.format_exc(limit=30)
    body = body_of(text, retries=3, traceback=trace * 6, requeue_timestamp=1)

    # Then the worker still parses it (the envelope's own limit decides its fate)
    assert json.loads(body)["args"][0]["body"]["text"] == text
    assert BoundedJSONEncoder().decode(body)["options"]["retries"] == 3


def test_no_limit_means_no_bound(settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 0}

    assert max_body_size() == 0
    assert BoundedJSONEncoder().decode(body_of("x" * 200_000))["actor_name"] == "handle"


def test_w010_a_project_on_dramatiqs_own_encoder(encoder_in_use: Any) -> None:
    encoder_in_use(JSONEncoder())

    assert [message.id for message in check_encoder()] == ["django_messenger.W005"]


def test_no_w010_with_the_bounded_encoder_or_without_a_size_limit(encoder_in_use: Any, settings: Any) -> None:
    encoder_in_use(BoundedJSONEncoder())
    assert check_encoder() == []

    encoder_in_use(JSONEncoder())
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 0}
    assert check_encoder() == []


# -- measuring an envelope only when its body could hold one over the limit -------------------


def test_only_a_body_over_the_limit_is_marked_for_measuring(small_limit: None, encoder_in_use: Any) -> None:
    # Given the bounded encoder in use
    encoder = BoundedJSONEncoder()
    encoder_in_use(encoder)

    # When a body within the limit and one over it are decoded
    small = Message(**encoder.decode(body_of("x" * 100)))
    large = Message(**encoder.decode(body_of("x" * (LIMIT + 100))))

    # Then only the large one must be measured (the small one cannot hold an envelope over the limit)
    assert not needs_measuring(small)
    assert needs_measuring(large) and large.options[BODY_SIZE] > LIMIT


def test_without_the_bounded_encoder_every_envelope_is_measured(encoder_in_use: Any) -> None:
    encoder_in_use(JSONEncoder())
    message = Message(**JSONEncoder().decode(body_of("x")))

    assert needs_measuring(message)
    assert needs_measuring(None), "nor without a message being processed"


@pytest.mark.django_db(transaction=True)
def test_a_worker_still_refuses_an_envelope_over_the_limit(small_limit: Any, broker: Any) -> None:
    # Given an envelope over the limit, published by someone who did not measure it
    actor = binding.actor_of(locator.handler_named(PING))
    payload = encode_envelope(Envelope(Ping("x" * (LIMIT + 100))))
    broker.enqueue(actor.message_with_options(args=(payload,)))

    # When a worker takes it
    drain(fail_fast=False)

    # Then it is poison: dead-lettered, never handled
    assert len(broker.dead_letters) == 1


class _SpacedJSONEncoder(JSONEncoder):
    """A JSON encoder with an encode of its own (spaces after separators)."""

    def encode(self, data: Any) -> bytes:
        return json.dumps(data).encode("utf-8")


@pytest.mark.parametrize(
    ("encoder", "bounds"),
    [
        (JSONEncoder(), True),
        (BoundedJSONEncoder(), True),
        (_SpacedJSONEncoder(), False),
        (PickleEncoder(), False),
    ],
    ids=["dramatiq-json", "bounded-json", "own-encode", "pickle"],
)
def test_only_dramatiqs_json_encoding_bounds_the_envelope_by_the_body(encoder: Any, bounds: bool) -> None:
    assert body_bounds_envelope(encoder) is bounds
