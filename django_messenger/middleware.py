"""Messenger's Dramatiq middleware, added to the broker when the app is ready.

It keeps the message being processed in a thread-local (for the ``ReceivedStamp``)
and gives every handler fresh database connections: Django's stale or broken
connections are closed before and after each message, as a request would.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import close_old_connections, connections
from dramatiq import Middleware

_local = threading.local()


def current_message() -> Any:
    """The Dramatiq message this worker thread is processing, or None."""
    return getattr(_local, "message", None)


def _close_old_connections() -> None:
    # Inside an atomic block (a test running a worker in-process) closing would break it.
    if not any(connection.in_atomic_block for connection in connections.all(initialized_only=True)):
        close_old_connections()


class MessengerMiddleware(Middleware):
    """Worker-side bookkeeping for messenger's actors."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        _local.message = message
        _close_old_connections()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        _local.message = None
        _close_old_connections()

    def after_skip_message(self, broker: Any, message: Any) -> None:
        _local.message = None
