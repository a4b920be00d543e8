"""The ``sync`` transport: every handler runs at once, in the dispatching process."""

from __future__ import annotations

from django.db import transaction

from ..conf import SYNC_TRANSPORT
from ..envelope import Envelope
from ..locator import locator
from ..once import call
from ..stamps import HandledStamp
from .base import Transport


class SyncTransport(Transport):
    """Runs the message type's handlers (from the locator) in order, each in ``transaction.atomic()``.

    Inside the caller's transaction that is a savepoint, so the handlers' writes commit
    or roll back with the caller's; outside one (a view) each handler gets a transaction
    of its own. A handler that raises stops the dispatch: the exception propagates.
    Each handler adds a :class:`HandledStamp` with its result.

    An idempotent handler runs in ``atomic()`` on its own database (``once.call``), its record
    committing with the caller's transaction; an envelope it already handled (the same
    ``message_id`` dispatched again) is not handled again and gets no ``HandledStamp``.
    """

    name = SYNC_TRANSPORT
    synchronous = True

    def send(self, envelope: Envelope) -> Envelope:
        for handler in locator.handlers_for(type(envelope.message)):
            if handler.idempotent is True:
                outcome = call(handler, envelope)  # in a transaction of its own database
                if not outcome.ran:
                    continue
                result = outcome.result
            else:
                with transaction.atomic():
                    result = handler.call(envelope)
            envelope = envelope.with_stamps(HandledStamp(result=result, handler_name=handler.name))
        return envelope
