"""Shared fixtures: a flushed StubBroker, recorded handler calls, a DRF client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from django_messenger.registry import registry
from tests.testapp import handlers


@pytest.fixture
def broker() -> Iterator[Any]:
    """The StubBroker of tests/settings.py, emptied before and after the test."""
    stub = registry.broker
    stub.flush_all()
    yield stub
    stub.flush_all()


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
