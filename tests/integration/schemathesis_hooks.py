"""schemathesis hooks (test_schemathesis.py): a 202 DELETE is applied, then read; a new request, a new key.

On the async transport a messenger DELETE answers 202 once the broker holds the message, and a
worker deletes the resource a moment later: accepted, then applied, as CQRS has it. schemathesis's
``use_after_free`` check (ST301) reads the resource right after a successful DELETE and expects a
404, as from an API that deletes before it answers. After each 202 DELETE this hook waits, as a
client would poll, until the resource's GET answers 404 (at most ``APPLY_WITHIN`` seconds), so that
the check judges the state the worker made. A worker that never applies it still fails the check.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import requests
import schemathesis

from django_messenger.idempotency import HEADER, KEY_SCHEMA, MAX_KEY_LENGTH

_VALID_KEY = re.compile(str(KEY_SCHEMA["pattern"]))

#: The longest a worker may take to apply an accepted DELETE, on a loaded machine.
APPLY_WITHIN = 60.0


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if case.method.upper() != "DELETE" or response.status_code != 202:
        return
    url = response.request.url
    deadline = time.monotonic() + APPLY_WITHIN
    while time.monotonic() < deadline:
        if requests.get(url, timeout=10).status_code == 404:
            return
        time.sleep(0.05)


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    """A valid ``Idempotency-Key`` made unique to the call: schemathesis sends one generated key
    with many different bodies, which a client never does (the demo rightly answers 422). A
    schema-violating key is left as it is, for the negative tests to see refused."""
    headers = case.headers or {}
    key = headers.get(HEADER)
    if isinstance(key, str) and len(key) <= MAX_KEY_LENGTH and _VALID_KEY.fullmatch(key):
        suffix = uuid.uuid4().hex
        headers[HEADER] = f"{key[: MAX_KEY_LENGTH - len(suffix) - 1]}-{suffix}"
        case.headers = headers
