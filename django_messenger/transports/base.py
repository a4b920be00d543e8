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
