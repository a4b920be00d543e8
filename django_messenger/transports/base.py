"""The transport interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from ..envelope import Envelope
from ..registry import Handler


class Transport(ABC):
    """Takes an envelope and its handlers; returns the envelope with what it added."""

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
    def send(self, envelope: Envelope, handlers: Sequence[Handler]) -> Envelope:
        """Send (or handle) ``envelope``; raise if it was not accepted."""
