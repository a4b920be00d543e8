"""A Dramatiq encoder that refuses an oversized message before parsing it.

Dramatiq's consumer decodes a message's whole body (``json.loads``) before any
middleware or actor sees it, so a worker's ``MAX_MESSAGE_SIZE`` check on the envelope
comes after the parsing it was meant to spare. :class:`BoundedJSONEncoder` is
Dramatiq's ``JSONEncoder`` with one more step on decoding: a body longer than
:func:`max_body_size` raises Dramatiq's ``DecodeError`` unread. Dramatiq's consumers log
that and reject the message (RabbitMQ: ``nack`` without requeue, so it goes to the
queue's ``.XQ`` dead letters); the worker goes on. Use it with django-dramatiq's setting::

    DRAMATIQ_ENCODER = "django_messenger.dramatiq_encoder.BoundedJSONEncoder"

System check ``django_messenger.W005`` warns when a project does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dramatiq import get_encoder, set_encoder
from dramatiq.encoder import Encoder, JSONEncoder, MessageData
from dramatiq.errors import DecodeError

from .conf import messenger_settings

#: Room for what Dramatiq adds around the envelope: the message's own keys and its options
#: (a retry stores the last traceback there, 30 frames and the exception's text).
OPTIONS_ALLOWANCE = 64 * 1024


#: The fields of a decoded Dramatiq message and the types Dramatiq's worker takes them to have
#: (``args`` is a list in the JSON; ``Message.decode`` makes it a tuple).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "queue_name": (str,),
    "actor_name": (str,),
    "args": (list, tuple),
    "kwargs": (dict,),
    "options": (dict,),
    "message_id": (str,),
    "message_timestamp": (int, float),
}


def wrong_field(fields: Mapping[str, Any]) -> str | None:
    """The first of ``fields`` (a Dramatiq message's) whose type Dramatiq's worker would trip on
    (an error that ends a worker thread, or restarts a consumer on the same message forever), or
    None. A field that is missing is Dramatiq's to refuse. An ``eta`` option must be a finite
    number (JSON's ``Infinity`` would hold the message in a worker's delay queue forever)."""
    for name, kinds in FIELD_TYPES.items():
        if name in fields:
            value = fields[name]
            if isinstance(value, bool) or not isinstance(value, kinds):
                return name
    options = fields.get("options")
    if isinstance(options, dict) and options.get("eta") is not None:
        eta = options["eta"]
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not math.isfinite(eta):
            return "options.eta"
    return None


def checked_fields(decoded: Any, data: bytes) -> Any:
    """``decoded``, unless it is a Dramatiq message (an object of the message's fields only, a
    queue and an actor name among them) with a field of another type than the worker takes it to
    have: then a ``DecodeError``, which every broker's consumer dead-letters as it does bytes that
    are not JSON (a forged message must not end a worker thread). Anything else is Dramatiq's to
    refuse, or not a message at all (a result backend decodes results with the encoder too)."""
    if (
        isinstance(decoded, dict)
        and "queue_name" in decoded
        and "actor_name" in decoded
        and decoded.keys() <= FIELD_TYPES.keys()
    ):
        problem = wrong_field(decoded)
        if problem is not None:
            raise DecodeError(
                f"The message's {problem!r} is not of the type a Dramatiq message has.", data[:64], None
            )
    return decoded


class FieldCheckingEncoder(Encoder):
    """A project's own Dramatiq encoder, with :func:`checked_fields` after its ``decode``: what the
    app puts in place of an encoder that is not a :class:`BoundedJSONEncoder` (which checks the
    fields itself), so that a forged message is refused on every project."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def encode(self, data: MessageData) -> bytes:
        return self.encoder.encode(data)

    def decode(self, data: bytes) -> MessageData:
        return checked_fields(self.encoder.decode(data), data)  # type: ignore[no-any-return]


def check_fields_when_decoding() -> None:
    """Make Dramatiq's global encoder check a message's fields while decoding (once)."""
    encoder = get_encoder()
    if not isinstance(encoder, BoundedJSONEncoder | FieldCheckingEncoder):
        set_encoder(FieldCheckingEncoder(encoder))


def max_body_size() -> int:
    """The largest Dramatiq message body a worker parses, in bytes; 0 for no limit.

    Twice ``MESSENGER["MAX_MESSAGE_SIZE"]`` plus :data:`OPTIONS_ALLOWANCE`: generous, so a
    message never becomes too large to parse merely by being retried. The envelope itself
    is still held to ``MAX_MESSAGE_SIZE`` exactly, by ``limits.check_envelope_size``.
    """
    limit = messenger_settings.MAX_MESSAGE_SIZE
    return 2 * limit + OPTIONS_ALLOWANCE if limit else 0


#: The option :class:`BoundedJSONEncoder` adds to a message whose body is larger than
#: ``MAX_MESSAGE_SIZE``: only such a message can hold an envelope over the limit.
BODY_SIZE = "messenger_body_size"


class BoundedJSONEncoder(JSONEncoder):
    """Dramatiq's JSON encoder, refusing to parse a body over :func:`max_body_size`.

    A body of at most ``MAX_MESSAGE_SIZE`` bytes cannot hold an envelope over that limit
    (the envelope is encoded inside it, by the same JSON encoder), so the worker measures
    the envelope only when the body was larger: this encoder marks such messages with the
    :data:`BODY_SIZE` option (see :func:`needs_measuring`).
    """

    def decode(self, data: bytes) -> MessageData:
        limit = messenger_settings.MAX_MESSAGE_SIZE
        size = len(data)
        if not limit or size <= limit:  # the common case: one settings read, one comparison
            return checked_fields(super().decode(data), data)  # type: ignore[no-any-return]
        bound = 2 * limit + OPTIONS_ALLOWANCE  # max_body_size()
        if size > bound:
            raise DecodeError(
                f"The message is {size} bytes, more than the {bound} bytes a worker parses "
                f"(MESSENGER['MAX_MESSAGE_SIZE']); it was not read.",
                data[:64],
                None,
            )
        decoded = checked_fields(super().decode(data), data)
        if isinstance(decoded, dict):
            options = decoded.get("options")
            if isinstance(options, dict):
                options[BODY_SIZE] = size
        return decoded  # type: ignore[no-any-return]


def body_bounds_envelope(encoder: Any) -> bool:
    """Whether a body that ``encoder`` (a Dramatiq encoder) writes is at least as long as the
    envelope inside it measures (``limits.envelope_size``).

    True for Dramatiq's ``JSONEncoder`` and its subclasses that keep its ``encode`` (such as
    :class:`BoundedJSONEncoder`): compact, ASCII-escaped JSON, the envelope written inside the
    message the same way. Then a body of at most ``MAX_MESSAGE_SIZE`` bytes needs no measuring.
    A :class:`FieldCheckingEncoder` writes what the encoder it wraps writes.
    """
    if isinstance(encoder, FieldCheckingEncoder):
        encoder = encoder.encoder
    return isinstance(encoder, JSONEncoder) and type(encoder).encode is JSONEncoder.encode


def needs_measuring(message: Any) -> bool:
    """Whether the envelope of ``message`` (a Dramatiq message being processed, or None) must be
    measured against ``MAX_MESSAGE_SIZE``: unless :class:`BoundedJSONEncoder` read its body and
    found it within the limit, it must."""
    return (
        message is None
        or not isinstance(get_encoder(), BoundedJSONEncoder)
        or not isinstance(message.options, dict)
        or BODY_SIZE in message.options
    )
