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
