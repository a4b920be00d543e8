"""Helpers for the tests of projects that use django-messenger.

``capture_dispatched()`` records every envelope dispatched on the bus;
``drain()`` runs the handlers of everything waiting on a ``StubBroker`` (the
broker of a test settings file), in worker threads, until every queue is empty.
``capture_messages()`` (the pytest fixture ``messenger``, ``MessengerTestMixin``)
keeps asynchronous messages from any broker and runs their handlers on demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TypeVar

import dramatiq
from dramatiq.brokers.stub import StubBroker

from .bus import bus
from .encoding import decode_envelope, encode_envelope
from .envelope import Envelope
from .exceptions import MessengerError
from .locator import locator
from .once import call
from .transports import Transport, router
from .transports.dramatiq.binding import binding

M = TypeVar("M")


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


# -- capture_messages: asynchronous messages kept instead of sent ------------------------


class CapturingTransport(Transport):
    """Stands in for an asynchronous transport: keeps each envelope instead of sending it.

    It is synchronous for the bus, so an envelope is kept at dispatch, even inside
    ``transaction.atomic()``. What the real transport refuses whatever the broker does
    (a message too large or undecodable for a worker) is still refused, by its ``check()``.
    """

    synchronous = True

    def __init__(self, replaced: Transport, kept: list[Envelope]) -> None:
        self.name = replaced.name
        self.replaced = replaced
        self.kept = kept

    def check(self, envelope: Envelope) -> None:
        self.replaced.check(envelope)

    def send(self, envelope: Envelope) -> Envelope:
        self.check(envelope)
        self.kept.append(envelope)
        return envelope


class Messenger:
    """What was dispatched while a capture is active (the ``messenger`` fixture)."""

    def __init__(self) -> None:
        #: Every envelope dispatched, in order, as handed to its transport (sync ones included).
        self.dispatched: list[Envelope] = []
        #: The envelopes kept instead of sent, whose handlers :meth:`handle_all` has not run yet.
        self.pending: list[Envelope] = []

    def messages(self, message_type: type[M]) -> list[M]:
        """The dispatched messages that are instances of ``message_type``, in order."""
        return [
            envelope.message for envelope in self.dispatched if isinstance(envelope.message, message_type)
        ]

    def handle_all(self) -> None:
        """Run the handlers of every pending envelope, in order, in this process, as a worker would.

        Each envelope goes through the wire format first (the handler sees what a worker
        would decode), then to every handler of its type. What those handlers dispatch is
        captured and handled in turn, until nothing is pending. A handler's exception
        propagates; the envelopes after it stay pending. An idempotent handler runs in its
        transaction and records the message, as in a worker.
        """
        while self.pending:
            envelope = decode_envelope(encode_envelope(self.pending.pop(0)))
            for handler in locator.handlers_for(type(envelope.message)):
                call(handler, envelope)

    def clear(self) -> None:
        """Forget everything dispatched so far; pending envelopes are dropped unhandled."""
        self.dispatched.clear()
        self.pending.clear()

    def _replace(self, transport: Transport) -> Transport:
        return transport if transport.synchronous else CapturingTransport(transport, self.pending)


@contextmanager
def capture_messages() -> Iterator[Messenger]:
    """Inside the block, asynchronous messages are kept instead of sent; sync ones are handled as usual.

    Nothing reaches Dramatiq or a broker. Yields a :class:`Messenger`.
    """
    messenger = Messenger()
    with router.replacing(messenger._replace), capture_dispatched() as dispatched:
        messenger.dispatched = dispatched
        yield messenger


class MessengerTestMixin:
    """For ``unittest`` test cases: ``self.messenger`` is a :class:`Messenger` active during each test."""

    messenger: Messenger

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        stack = ExitStack()
        self.messenger = stack.enter_context(capture_messages())
        self.addCleanup(stack.close)  # type: ignore[attr-defined]
