"""The transport interface."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..envelope import Envelope


class Transport(ABC):
    """Takes an envelope; returns the envelope with what it added.

    A transport knows where an envelope goes; the handlers are found on the receiving
    side (the sync transport asks the locator, a worker's actor is bound to its handler).
    """

    #: The transport's name in ``MESSENGER["TRANSPORTS"]`` (or ``"sync"``).
    name: str
    #: True when sending handles the message in this process, at once.
    synchronous: bool = False

    def transaction_alias(self) -> str | None:
        """The database alias whose open transaction a send writes the message in, or None.

        A transactional transport (the PostgreSQL broker's) writes the message with the
        caller's connection: inside ``transaction.atomic(using=alias)`` the message exists if
        and only if that transaction commits, so the bus sends at once instead of waiting for
        the commit. Every other transport answers None.
        """
        return None

    def check(self, envelope: Envelope) -> None:
        """Raise now what :meth:`send` would raise for ``envelope`` whatever the broker does.

        The bus calls it when the send itself waits for a commit, so that a message no worker
        would accept fails inside the caller's transaction, not after it committed. The
        default accepts everything (a transport that handles in-process checks nothing).
        """
        return None

    @abstractmethod
    def send(self, envelope: Envelope) -> Envelope:
        """Send (or handle) ``envelope``; raise if it was not accepted."""
