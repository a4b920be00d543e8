"""Shared fixtures: a flushed StubBroker, recorded handler calls, a DRF client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from django_messenger.locator import Handler, locator
from django_messenger.message_types import message_types
from django_messenger.transports.dramatiq.binding import binding
from tests.testapp import handlers


@pytest.fixture
def broker() -> Iterator[Any]:
    """The StubBroker of tests/settings.py, emptied before and after the test."""
    stub = binding.broker
    stub.flush_all()
    yield stub
    stub.flush_all()


@pytest.fixture
def scratch() -> Iterator[Callable[[Callable[..., Any]], Handler]]:
    """Forget, after the test, every handler, actor and type the test registered.

    Yields ``handler_of(fn)``: the Handler that @handler recorded for ``fn``.
    """
    handlers_before = list(locator.handlers)
    actors_before = set(binding.broker.actors)
    types_before = set(message_types._types)

    def handler_of(fn: Callable[..., Any]) -> Handler:
        [found] = [h for h in locator.handlers if h.fn is fn]
        return found

    yield handler_of

    for registered in list(locator.handlers):
        if not any(registered is before for before in handlers_before):
            locator.unregister(registered)
    for name in set(binding.broker.actors) - actors_before:
        del binding.broker.actors[name]
    for name in set(message_types._types) - types_before:
        message_types._names.pop(message_types._types.pop(name), None)
    assert [id(h) for h in locator.handlers] == [id(h) for h in handlers_before]


@pytest.fixture
def received() -> Iterator[list[Any]]:
    """The envelopes the test app's handlers received (in this process)."""
    handlers.received.clear()
    yield handlers.received
    handlers.received.clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def sync_transport(settings: Any) -> None:
    """Route every message to the sync transport."""
    settings.MESSENGER = {**settings.MESSENGER, "DEFAULT_TRANSPORT": "sync"}


def queued(stub: Any) -> list[Any]:
    """The Dramatiq messages waiting on every queue of ``stub`` (delay queues included)."""
    from dramatiq import Message

    messages = []
    for queue in stub.queues.values():
        messages.extend(Message.decode(data) for data in list(queue.queue))
    return messages
