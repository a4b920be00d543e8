"""How large an encoded envelope is, measured the same way on the web and the worker side.

``MESSENGER["MAX_MESSAGE_SIZE"]`` bounds the envelope as it travels: the compact,
ASCII-escaped JSON that Dramatiq's JSON encoder writes (a non-ASCII character costs
6 to 12 bytes). The web side measures an envelope before publishing it (and answers
413 when it is too large); the worker measures what it received before decoding it.
Both call :func:`check_envelope_size`, so they cannot disagree.
"""

from __future__ import annotations

import json
from typing import Any

from .conf import messenger_settings
from .exceptions import MessageTooLarge

#: Measures an envelope as Dramatiq's JSON encoder writes it (built once: json.dumps with
#: arguments builds a new encoder every call, which costs as much as the encoding).
_SIZE_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def envelope_size(payload: Any) -> int:
    """The size in bytes of the encoded envelope ``payload`` (a JSON-ready dict) on the wire."""
    return len(_SIZE_ENCODER.encode(payload))


def check_envelope_size(payload: Any) -> None:
    """Raise :class:`MessageTooLarge` when ``payload`` exceeds ``MAX_MESSAGE_SIZE`` (0: no limit)."""
    limit = messenger_settings.MAX_MESSAGE_SIZE
    if limit:
        size = envelope_size(payload)
        if size > limit:
            raise MessageTooLarge(limit, size)
