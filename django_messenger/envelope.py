"""The envelope: a message, its id and its stamps, immutable.

After Symfony Messenger's ``Envelope``: adding stamps makes a new envelope, and
``last(StampType)`` / ``all(StampType)`` read them back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, TypeVar

from .stamps import Stamp

S = TypeVar("S", bound=Stamp)


class Envelope:
    """A message with the stamps that travel with it.

    ``message_id`` is a UUID chosen when the message is first dispatched; it is the
    one every handler sees, the ``Messenger-Message-Id`` header carries and
    ``messenger_failed`` finds failures by.
    """

    __slots__ = ("message", "message_id", "stamps")

    message: Any
    message_id: uuid.UUID
    stamps: tuple[Stamp, ...]

    def __init__(
        self, message: Any, stamps: Iterable[Stamp] = (), *, message_id: uuid.UUID | None = None
    ) -> None:
        if isinstance(message, Envelope):
            raise TypeError("An Envelope cannot wrap another Envelope; use envelope.with_stamps().")
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "message_id", message_id if message_id is not None else uuid.uuid4())
        object.__setattr__(self, "stamps", tuple(stamps))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Envelope is immutable; use with_stamps() to add stamps.")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Envelope is immutable.")

    def with_stamps(self, *stamps: Stamp) -> Envelope:
        """A new envelope with ``stamps`` added after the existing ones."""
        return Envelope(self.message, self.stamps + stamps, message_id=self.message_id)

    def without(self, stamp_type: type[Stamp]) -> Envelope:
        """A new envelope without the stamps of ``stamp_type``."""
        kept = (stamp for stamp in self.stamps if not isinstance(stamp, stamp_type))
        return Envelope(self.message, kept, message_id=self.message_id)

    def last(self, stamp_type: type[S]) -> S | None:
        """The last stamp of ``stamp_type``, or ``None``."""
        for stamp in reversed(self.stamps):
            if isinstance(stamp, stamp_type):
                return stamp
        return None

    def all(self, stamp_type: type[S]) -> list[S]:
        """Every stamp of ``stamp_type``, oldest first."""
        return [stamp for stamp in self.stamps if isinstance(stamp, stamp_type)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return (self.message_id, self.message, self.stamps) == (other.message_id, other.message, other.stamps)

    def __hash__(self) -> int:
        return hash(self.message_id)

    def __repr__(self) -> str:
        names = ", ".join(type(stamp).__name__ for stamp in self.stamps)
        return f"<Envelope {self.message_id} {type(self.message).__name__} [{names}]>"
