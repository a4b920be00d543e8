"""Hand-written Dramatiq actors: the baseline (found by rundramatiq's ``tasks`` discovery).

Same queue settings, broker and middleware as messenger's handlers; the retry options are
messenger's defaults, so both sides declare the same actor options.
"""

from __future__ import annotations

import time

import dramatiq
from django.conf import settings

from .report import report_start

RETRY_OPTIONS = {"max_retries": 3, "min_backoff": 1_000, "max_backoff": 300_000}


@dramatiq.actor(actor_name="bench.raw_noop", queue_name=settings.RAW_QUEUE, **RETRY_OPTIONS)
def raw_noop(name: str, count: int) -> None:
    """Does nothing."""


@dramatiq.actor(actor_name="bench.raw_timed", queue_name=settings.RAW_QUEUE, **RETRY_OPTIONS)
def raw_timed(sent: float) -> None:
    """Reports when it started, for the end-to-end latency."""
    report_start("dramatiq", sent, time.time())
