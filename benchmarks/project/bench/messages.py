"""The messages of the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Ping:
    """The HTTP and worker benchmarks' message: small, two fields."""

    name: str
    count: int


@dataclass
class TimedPing:
    """The end-to-end benchmark's message: when the client sent the request (``time.time()``)."""

    sent: float


@dataclass
class OncePing:
    """The idempotent worker variant's message: a Ping whose handler is ``idempotent=True``.

    A type of its own, so that Ping keeps one handler (a second one would make every Ping a
    fan-out and change what the other variants measure).
    """

    name: str
    count: int
