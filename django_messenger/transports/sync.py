"""The ``sync`` transport: every handler runs at once, in the dispatching process."""

from __future__ import annotations

from django.db import transaction

from ..conf import SYNC_TRANSPORT
from ..envelope import Envelope
from ..locator import locator
from ..stamps import HandledStamp
from .base import Transport


class SyncTransport(Transport):
    """Runs the message type's handlers (from the locator) in order, each in ``transaction.atomic()``.

    Inside the caller's transaction that is a savepoint, so the handlers' writes commit
    or roll back with the caller's; outside one (a view) each handler gets a transaction
    of its own. A handler that raises stops the dispatch: the exception propagates.
    Each handler adds a :class:`HandledStamp` with its result.
    """

    name = SYNC_TRANSPORT
    synchronous = True

    def send(self, envelope: Envelope) -> Envelope:
        for handler in locator.handlers_for(type(envelope.message)):
            with transaction.atomic():
                result = handler.call(envelope)
            envelope = envelope.with_stamps(HandledStamp(result=result, handler_name=handler.name))
        return envelope
