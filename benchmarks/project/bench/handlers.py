"""The messenger handlers of the benchmarks (found by django_messenger's autodiscovery)."""

from __future__ import annotations

import time

from django_messenger import handler

from .messages import OncePing, Ping, TimedPing
from .models import Item
from .report import report_start


@handler
def handle_ping(message: Ping) -> None:
    """Does nothing: the worker benchmark measures what is around it."""


@handler(idempotent=True)
def handle_once_ping(message: OncePing) -> None:
    """Does nothing, once per message: the worker variant ``messenger-idempotent`` measures the
    record row written with it in one transaction."""


@handler
def handle_item(message: Item) -> None:
    """Does nothing (the encoding benchmark needs Item to be a registered message type)."""


@handler
def handle_timed_ping(message: TimedPing) -> None:
    """Reports when it started, for the end-to-end latency."""
    report_start("messenger", message.sent, time.time())
