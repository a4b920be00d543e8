"""Exceptions raised by django-messenger.

Every exception derives from :class:`MessengerError`. :class:`BrokerUnavailable` is
also a DRF ``APIException`` so that any DRF view that dispatches (ours or a user's
own) answers 503 with a ``Retry-After`` header instead of a 500.
"""

from __future__ import annotations

from rest_framework import status
from rest_framework.exceptions import APIException


class MessengerError(Exception):
    """Base class of every error raised by django-messenger."""


class NoHandlerForMessage(MessengerError):
    """A message was dispatched whose type has no registered handler."""


class UnknownMessageType(MessengerError):
    """A type name read from the wire is not a registered message type."""


class MessageDecodingFailed(MessengerError):
    """A message read from the wire is malformed or does not fit its type.

    Such a message is poison: it is never retried, it goes to the dead letters.
    """


class MessageTooLarge(MessageDecodingFailed):
    """An encoded envelope is larger than ``MESSENGER["MAX_MESSAGE_SIZE"]``.

    On the web side nothing is sent (a view answers 413); a worker treats such a
    message as poison.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"The envelope is larger than MESSENGER['MAX_MESSAGE_SIZE'] ({limit} bytes).")
        self.limit = limit


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
    """The broker did not accept the message (down, unreachable, nack, timeout).

    Nothing was sent. In a DRF view this becomes a 503 with a ``Retry-After`` header.
    """

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The message broker is unavailable; nothing was sent. Retry later."
    default_code = "broker_unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None) -> None:
        APIException.__init__(self, detail)
        if retry_after is None:
            from .conf import messenger_settings

            retry_after = messenger_settings.RETRY_AFTER
        #: Seconds a client should wait; DRF's exception handler sends it as ``Retry-After``.
        self.wait = retry_after


class RequestTooLarge(APIException):
    """The request body is larger than Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``: nothing was sent."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"
