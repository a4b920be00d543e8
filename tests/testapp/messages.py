"""Message classes of the test app."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class Ping:
    text: str


@dataclass(frozen=True)
class Address:
    street: str
    city: str


@dataclass
class Everything:
    """A message whose fields exercise every type of the wire format."""

    text: str
    number: int
    ratio: float
    flag: bool
    nothing: None
    amount: Decimal
    at: datetime.datetime
    day: datetime.date
    clock: datetime.time
    ident: uuid.UUID
    items: list[int]
    mapping: dict[str, Decimal]
    optional: str | None = None
    address: Address | None = None
    addresses: list[Address] = field(default_factory=list)


@dataclass
class Shout:
    """Handled by two handlers: fan-out."""

    text: str


class PlainGreeting:
    """A plain class (not a dataclass) as a message."""

    messenger_name = "testapp.greeting"

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlainGreeting) and other.name == self.name


@dataclass
class Compute:
    """Handled synchronously; its handler returns a result."""

    a: int
    b: int


@dataclass
class RenameArticle:
    """An input DTO for the article resource."""

    title: str


@dataclass
class Flaky:
    """Its handler fails until a "fixed" Effect row names its text."""

    text: str


@dataclass
class Work:
    """A unit of work that takes ``sleep_ms``; its handler records its start and its end."""

    n: int
    sleep_ms: int = 0


@dataclass
class IdempotentWork:
    """Work for an idempotent handler: ``sleep_ms`` inside its transaction, ``hold_ms`` after the commit
    (before the worker acknowledges the message)."""

    n: int
    sleep_ms: int = 0
    hold_ms: int = 0
