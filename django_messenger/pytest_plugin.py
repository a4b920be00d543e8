"""The pytest plugin (the ``pytest11`` entry point ``django_messenger``): the ``messenger`` fixture.

Like pytest-django's ``mailoutbox``: during a test that asks for ``messenger``,
asynchronous messages are kept instead of sent (no broker is touched), and
``messenger.handle_all()`` runs their handlers in the test's process. See docs/testing.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import Messenger


@pytest.fixture
def messenger() -> Iterator[Messenger]:
    """Asynchronous messages dispatched during the test, kept instead of sent: a ``Messenger``."""
    # Imported here, not at the top: pytest loads this plugin before pytest-django has
    # configured Django, and django_messenger.testing needs the settings.
    from .testing import capture_messages

    with capture_messages() as captured:
        yield captured
