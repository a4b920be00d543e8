"""Exceptions raised by django-messenger.

Every exception derives from :class:`MessengerError`. :class:`BrokerUnavailable` and
:class:`MessageTooLarge` are also DRF ``APIException`` subclasses, so that any DRF view that
dispatches (ours or a user's own) answers 503 (with ``Retry-After``) or 413 instead of a 500.

Such an exception has two texts: its ``detail`` is what a client sees, and says what the
client can do, never hosts, ports or exception text; ``str(exc)`` (its ``reason``) is what
happened, for logs, tracebacks and the failure store.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rest_framework import status
from rest_framework.exceptions import APIException

from .conf import messenger_settings

if TYPE_CHECKING:
    from .envelope import Envelope


class MessengerError(Exception):
    """Base class of every error raised by django-messenger."""


class HandlerErrorCode(enum.Enum):
    """Why a handler cannot be used; each code is one system check (docs/checks.md)."""

    #: No message type: neither named nor readable from the first parameter's annotation (E002).
    NO_MESSAGE_TYPE = "no_message_type"
    #: Another actor of the broker already has the handler's actor name (E003).
    ACTOR_NAME_TAKEN = "actor_name_taken"
    #: Dramatiq refused to declare the handler's actor, e.g. an unknown actor option (E007).
    ACTOR_REFUSED = "actor_refused"


@dataclass(frozen=True)
class HandlerError:
    """Why a handler cannot be used (``Handler.error``), raised by nothing: the checks report it.

    The system checks branch on :attr:`code`; :attr:`message` is for people.
    """

    code: HandlerErrorCode
    message: str

    def __str__(self) -> str:
        return self.message


class NoHandlerForMessage(MessengerError):
    """A message was dispatched whose type has no registered handler."""


class UnknownMessageType(MessengerError):
    """A type name read from the wire is not a registered message type."""


class MessageDecodingFailed(MessengerError):
    """A message read from the wire is malformed or does not fit its type.

    Such a message is poison: it is never retried, it goes to the dead letters.
    """


class MessageTooLarge(MessageDecodingFailed, APIException):
    """An encoded envelope is larger than ``MESSENGER["MAX_MESSAGE_SIZE"]``.

    On the web side nothing is sent (a DRF view answers 413); a worker treats such a
    message as poison. ``size`` is the envelope's size in bytes, ``limit`` the setting's.
    """

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request is too large to be sent as one message. Send less data."
    default_code = "message_too_large"

    def __init__(self, limit: int, size: int) -> None:
        APIException.__init__(
            self,
            f"The request is too large to be sent as one message: it makes {size} bytes, and the limit "
            f"is {limit} bytes (a character outside ASCII counts 6 to 12). Send less data.",
        )
        self.limit = limit
        self.size = size
        self.reason = (
            f"The envelope is {size} bytes, larger than MESSENGER['MAX_MESSAGE_SIZE'] ({limit} bytes)."
        )

    def __str__(self) -> str:
        return self.reason


class MessageNotDeliverable(MessengerError, APIException):
    """A worker would refuse this envelope as poison (a value that does not fit its field's type,
    a container over the decoding bounds...): nothing was sent.

    The web side decodes what it is about to publish with the worker's own decoder, so that
    a 202 never answers a message that a worker will dead-letter. In a DRF view this is a 400;
    ``reason`` (``str(exc)``) says what the worker would have said, for the log.
    """

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = (
        "The request's data cannot be sent as a message that this endpoint's handlers accept. "
        "Check the values you sent."
    )
    default_code = "message_not_deliverable"

    def __init__(self, reason: str) -> None:
        APIException.__init__(self)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class FailedMessageGone(MessengerError):
    """A failed message was asked to be retried, but another retry or a removal took it first.

    Nothing was sent by this call: the one that took it did the retry (or the removal).
    """

    def __init__(self, message_id: object) -> None:
        super().__init__(f"Failed message {message_id} was already retried or removed.")
        self.message_id = message_id


class MessageEncodingFailed(MessengerError, TypeError):
    """A message holds a value that the JSON wire format cannot carry."""


class UnknownTransport(MessengerError):
    """Routing named a transport that ``MESSENGER["TRANSPORTS"]`` does not define."""


class BrokerUnavailable(MessengerError, APIException):
    """The broker did not confirm the message (down, unreachable, nack, no confirm in time).

    The message may still have reached the broker: a confirm can time out after the broker
    took the message, so it may be delivered once even though the send failed (handlers
    de-duplicate by message id, docs/reliability.md). ``reason`` (``str(exc)``) says what
    happened, for the log; the client-facing ``detail`` never names hosts, ports or
    exception text. The transport sets ``envelope``, the envelope whose send failed
    (``message_id`` is its id). In a DRF view this becomes a 503 with a ``Retry-After``
    header; messenger's views add the ``Messenger-Message-Id`` header.
    """

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = (
        "The message broker did not confirm the message; it may or may not have been accepted. "
        "Retry after the Retry-After delay; the Messenger-Message-Id header identifies this attempt."
    )
    default_code = "broker_unavailable"

    def __init__(
        self, reason: str | None = None, *, retry_after: int | None = None, envelope: Envelope | None = None
    ) -> None:
        APIException.__init__(self)
        #: What happened, for logs and developers (never sent to a client).
        self.reason = reason or "The message broker did not confirm the message."
        #: The envelope whose send failed, once the transport knows it.
        self.envelope = envelope
        if retry_after is None:
            retry_after = messenger_settings.RETRY_AFTER
        #: Seconds a client should wait; DRF's exception handler sends it as ``Retry-After``.
        self.wait = retry_after

    @property
    def message_id(self) -> uuid.UUID | None:
        """The id of the envelope whose send failed (None until the transport set it)."""
        return self.envelope.message_id if self.envelope is not None else None

    def __str__(self) -> str:
        return self.reason


class RequestTooLarge(APIException):
    """The request body is larger than Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``: nothing was sent."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large. Send less data."
    default_code = "request_too_large"


class IdempotencyKeyMissing(APIException):
    """400: the view requires an ``Idempotency-Key`` header and the request has none (or a malformed one)."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "This endpoint requires an Idempotency-Key header (1 to 255 printable characters)."
    default_code = "idempotency_key_missing"


class IdempotencyKeyInUse(APIException):
    """409: a request with the same ``Idempotency-Key`` is still being answered."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still being answered: retry later."
    default_code = "idempotency_key_in_use"
    #: DRF's exception handler sends it as ``Retry-After`` (seconds).
    wait = 1


class IdempotencyKeyReused(APIException):
    """422: the ``Idempotency-Key`` was used before with another request (method, path or body)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used with another request: use a new key."
    default_code = "idempotency_key_reused"
