"""Helpers for the tests of projects that use django-messenger.

``capture_dispatched()`` records every envelope dispatched on the bus;
``drain()`` runs the handlers of everything waiting on a ``StubBroker`` (the
broker of a test settings file), in worker threads, until every queue is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
from dramatiq.brokers.stub import StubBroker

from .bus import bus
from .envelope import Envelope
from .exceptions import MessengerError
from .transports.dramatiq.binding import binding


@contextmanager
def capture_dispatched() -> Iterator[list[Envelope]]:
    """Collect the envelopes dispatched inside the block (they are still sent)."""
    envelopes: list[Envelope] = []
    bus.listeners.append(envelopes.append)
    try:
        yield envelopes
    finally:
        bus.listeners.remove(envelopes.append)


def drain(*, fail_fast: bool = True, timeout: float = 30.0) -> None:
    """Process every message on the StubBroker, delayed ones included, then return.

    With ``fail_fast`` the error of the first message that failed for good during this
    drain (after its retries) is raised here. Handlers run in Dramatiq worker threads,
    so their database writes need a test that commits (pytest-django's
    ``transactional_db``).
    """
    broker = binding.broker
    if not isinstance(broker, StubBroker):
        raise TypeError(
            'drain() needs a StubBroker (DRAMATIQ_BROKER["BROKER"] = "dramatiq.brokers.stub.StubBroker"), '
            f"not {type(broker).__name__}."
        )
    dead_before = len(broker.dead_letters)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        while any(queue.unfinished_tasks for queue in broker.queues.values()):
            for queue_name in list(broker.queues):
                broker.join(queue_name, timeout=int(timeout * 1000), fail_fast=False)
        worker.join()
    finally:
        worker.stop()
        # A Worker adds a middleware of its own to the broker; drop it with the worker.
        broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]
    if fail_fast:
        for message in broker.dead_letters[dead_before:]:
            raise message._exception or MessengerError(f"Message {message.message_id} failed.")
