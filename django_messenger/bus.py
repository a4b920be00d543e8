"""The message bus: ``bus.dispatch(message)`` -> :class:`Envelope`.

Dispatching wraps the message in an envelope, makes sure its type has a handler (a
type without one is an error), asks routing for its transport and hands the envelope
over; the transport's receiving side finds the handlers:

* the ``sync`` transport runs the handlers at once, inside the caller's transaction,
  and returns the envelope with a :class:`HandledStamp` per handler;
* a Dramatiq transport publishes it once. Inside ``transaction.atomic()`` the send
  waits for the commit (a rollback sends nothing; a send that fails at commit raises
  there) and the returned envelope has no ``SentStamp`` yet;
* a transactional transport (the PostgreSQL broker, whose enqueue is an INSERT on the
  caller's connection) inside a transaction of its database writes the message at once,
  in that transaction: it exists if and only if the transaction commits, a failure raises
  at the dispatch, and the envelope has its ``SentStamp``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from .envelope import Envelope
from .locator import locator
from .stamps import DelayStamp, Stamp
from .transports import router

#: Called with each envelope as it is handed to its transport (see django_messenger.testing).
Listener = Callable[[Envelope], None]


class MessageBus:
    """Sends messages to their transports."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def dispatch(
        self,
        message: Any,
        *,
        stamps: Iterable[Stamp] = (),
        delay: timedelta | None = None,
        on_commit: bool = True,
    ) -> Envelope:
        """Dispatch ``message`` (or an :class:`Envelope`); return its envelope.

        ``delay`` adds a :class:`DelayStamp`. ``on_commit=False`` sends at once even
        inside a transaction (views do this: they write nothing themselves); on a
        transactional transport "at once" is on the caller's connection, so inside a
        transaction the message still commits with it.
        """
        envelope = (
            message.with_stamps(*stamps) if isinstance(message, Envelope) else Envelope(message, stamps)
        )
        if delay is not None:
            envelope = envelope.with_stamps(DelayStamp(delay))
        cls = type(envelope.message)
        locator.handlers_for(cls)  # raises NoHandlerForMessage before anything is sent
        transport = router.transport_for(cls)
        for listener in self.listeners:
            listener(envelope)
        if transport.synchronous or not on_commit:
            return transport.send(envelope)
        alias = transport.transaction_alias()
        if alias is not None and connections[alias].in_atomic_block:
            return transport.send(envelope)  # written in the caller's transaction
        if not connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return transport.send(envelope)
        transport.check(envelope)  # what no worker would accept fails here, before the commit
        transaction.on_commit(lambda: transport.send(envelope))
        return envelope


bus = MessageBus()
