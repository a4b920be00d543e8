"""Hostile bodies against a real gunicorn server: what Django's own handler would make of them.

The test client and a real server can differ (Django's handler turns SuspiciousOperation into
an HTML 400 page, a worker thread's stack is not the test's), so the deep-nesting and
too-many-fields cases are also sent over HTTP to gunicorn, publishing to real RabbitMQ.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import delete_queues
from .processes import start_server, wait_for
from .rabbit import queue_depth

DEPTH = 100_000
BOUNDARY = "hostile-boundary"


def multipart_fields(count: int) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n1\r\n'.encode()
        for i in range(count)
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


HOSTILE = [
    ("json-deep-arrays", b"[" * DEPTH + b"]" * DEPTH, "application/json", 400),
    ("json-deep-objects", b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, "application/json", 400),
    (
        "form-too-many-fields",
        "&".join(f"f{i}=1" for i in range(1001)).encode(),
        "application/x-www-form-urlencoded",
        400,
    ),
    ("multipart-too-many-fields", multipart_fields(1001), f"multipart/form-data; boundary={BOUNDARY}", 400),
    ("form-invalid-utf8", b"text=%FF", "application/x-www-form-urlencoded", 400),
    ("json-huge-int", b'{"text": ' + b"1" * 100_000 + b"}", "application/json", 400),
    ("wrong-content-type", b'{"text": "hi"}', "text/plain", 415),
]


@pytest.fixture(scope="module")
def own_server(process_env: dict[str, str], log_dir: Path, rabbitmq: str) -> Iterator[tuple[str, str]]:
    """A gunicorn server of this module only, publishing to a queue nobody consumes."""
    queue = f"messenger-hostile-{uuid.uuid4().hex[:12]}"
    process, url = start_server(
        {**process_env, "MESSENGER_QUEUE": queue}, log_dir, wsgi="tests.integration.wsgi:application"
    )
    try:
        yield url, queue
    finally:
        process.stop()
        delete_queues(queue)


@pytest.mark.parametrize(
    ("body", "content_type", "status"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_a_hostile_body_is_a_json_4xx_from_a_real_server(own_server, body, content_type, status):
    url, _ = own_server

    response = requests.post(f"{url}/pings/", data=body, headers={"Content-Type": content_type}, timeout=30)

    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    assert "detail" in response.json()


def test_the_hostile_bodies_dispatched_nothing(own_server):
    # Given the server that answered every hostile body above (the queue may not exist yet)
    url, queue = own_server
    for _, body, content_type, _ in HOSTILE:
        requests.post(f"{url}/pings/", data=body, headers={"Content-Type": content_type}, timeout=30)

    # When one valid write follows
    assert requests.post(f"{url}/pings/", json={"text": "valid"}, timeout=15).status_code == 202

    # Then the queue holds that one message only
    wait_for(lambda: queue_depth(queue) >= 1, timeout=10, what="the valid ping on the queue")
    assert queue_depth(queue) == 1
