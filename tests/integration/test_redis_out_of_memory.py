"""A Redis out of memory: 503 while it refuses writes, never a 202 for a message it did not store.

A redis-server of this test's own (small ``maxmemory``, ``noeviction`` or ``volatile-lru``, no
persistence) behind a real gunicorn and a real ``rundramatiq`` worker. The test fills Redis with
keys of its own until it refuses writes, checks the answers while it is full, frees the memory,
and checks that every message answered 202 (before, during and after) was handled.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from tests.redisserver import RedisServer
from tests.testapp.models import Effect

from .processes import Process, start_server, start_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: Small enough to fill in a second, large enough for the queue, the workers' heartbeats and
#: the connections of a server and a worker.
MAXMEMORY = "16mb"
FILLER = "filler:"
#: Bytes each filler key takes. SETRANGE makes them from a tiny command: Redis counts a command's
#: own arguments in the memory it checks, so a large SET is refused while small writes still fit.
CHUNK = 256 * 1024
#: How far below its use the limit is set once Redis is full, so that it stays full: at the
#: boundary, Redis's use moves by a few KB (client buffers) and a small write can slip in.
HOLD = 1024 * 1024
PUBLISH_TIMEOUT = 2.0


@pytest.fixture(params=["noeviction", "volatile-lru"])
def oom_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis that refuses writes when full: ``noeviction``, or a ``volatile-*`` policy, which
    evicts only keys with an expiry (Dramatiq's have none, nor have the filler keys)."""
    policy = request.param
    with RedisServer(tmp_path, "--maxmemory", MAXMEMORY, "--maxmemory-policy", policy) as server:
        yield server


@pytest.fixture
def redis_env(oom_redis: RedisServer, process_env: dict[str, str]) -> dict[str, str]:
    return {
        **process_env,
        "MESSENGER_TEST_BROKER": "redis",
        "MESSENGER_BROKER_URL": oom_redis.url,
        "MESSENGER_REDIS_NAMESPACE": f"messenger-oom-{uuid.uuid4().hex[:8]}",
        "MESSENGER_QUEUE": f"messenger-oom-{uuid.uuid4().hex[:8]}",
        "MESSENGER_PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
    }


@pytest.fixture
def processes(redis_env: dict[str, str], log_dir: Path) -> Iterator[tuple[Process, str]]:
    """A worker and a server on the full-able Redis; stopped after the test."""
    worker = start_worker(redis_env, log_dir, queues=[redis_env["MESSENGER_QUEUE"]], threads=2)
    try:
        server, url = start_server(redis_env, log_dir, wsgi="tests.integration.wsgi:application", threads=4)
        try:
            yield worker, url
        finally:
            server.stop()
    finally:
        worker.stop()


def post(url: str, text: str) -> requests.Response:
    return requests.post(f"{url}/pings/", json={"text": text}, timeout=PUBLISH_TIMEOUT + 30)


def handled_ids() -> set[uuid.UUID]:
    return set(Effect.objects.filter(handler="ping").values_list("message_id", flat=True))


def fill(client: redis.Redis) -> int:
    """Write filler keys until Redis refuses one, then hold it full; return how many it took."""
    for n in range(10_000):
        try:
            client.setrange(f"{FILLER}{n}", CHUNK - 1, "x")
        except redis.exceptions.OutOfMemoryError:
            break
    else:
        raise AssertionError("Redis never refused a write: is maxmemory set?")
    used = int(client.info("memory")["used_memory"])
    assert used >= int(client.config_get("maxmemory")["maxmemory"])
    client.config_set("maxmemory", used - HOLD)
    return n


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the POST started
    received: float  # and when its answer came
    status: int
    message_id: str | None


class Poster(threading.Thread):
    """POSTs a ping every ``interval`` seconds until stopped; keeps every answer."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.answers: list[Answer] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            sent = time.monotonic()
            response = post(self.url, f"steady {n}")
            self.answers.append(
                Answer(
                    sent, time.monotonic(), response.status_code, response.headers.get("Messenger-Message-Id")
                )
            )
            n += 1
            self.stopping.wait(self.interval)

    def between(self, start: float, end: float) -> list[int]:
        """The statuses of the POSTs sent after ``start`` and answered before ``end``."""
        return [a.status for a in self.answers if a.sent > start and a.received < end]

    def stop(self) -> None:
        self.stopping.set()
        self.join(PUBLISH_TIMEOUT + 60)


def test_a_full_redis_is_a_503_never_a_lost_202_and_202_again_once_freed(oom_redis, processes):
    worker, url = processes
    client = redis.Redis.from_url(oom_redis.url)
    accepted: set[uuid.UUID] = set()
    refused: set[uuid.UUID] = set()

    # Given a server and a worker on a Redis with room: writes are accepted and handled
    for n in range(5):
        response = post(url, f"before {n}")
        assert response.status_code == 202, response.text
        accepted.add(uuid.UUID(response.headers["Messenger-Message-Id"]))
    wait_for(lambda: accepted <= handled_ids(), timeout=60, what="the pings before the fill")

    # And a client posting steadily through everything that follows
    poster = Poster(url)
    poster.start()
    try:
        # When Redis's memory fills up (noeviction: it refuses writes, evicts nothing)
        filled = fill(client)
        full_since = time.monotonic()
        print(f"[oom] Redis refused a write after {filled} filler keys of {CHUNK} bytes")

        # Then every write is refused with a 503: Retry-After, the attempt's id, a JSON body
        # that names nothing inside (no host, port, broker or Redis error)
        for n in range(10):
            response = post(url, f"while full {n}")
            assert response.status_code == 503, response.text
            assert int(response.headers["Retry-After"]) > 0
            refused.add(uuid.UUID(response.headers["Messenger-Message-Id"]))
            body = response.json()
            assert set(body) == {"detail"}, body
            for internal in ("127.0.0.1", str(oom_redis.port), "redis", "oom", "memory", "Error"):
                assert internal.lower() not in body["detail"].lower(), body
        # (the steady client meets the full Redis too)
        wait_for(lambda: len(poster.between(full_since, time.monotonic())) >= 3, timeout=60, what="3 posts")

        # When the memory is freed (the filler keys deleted: DEL is allowed while full)
        full_until = time.monotonic()
        client.delete(*(f"{FILLER}{n}" for n in range(filled + 1)))

        # Then writes are accepted again, by the same server, with no restart
        response = post(url, "after")
        assert response.status_code == 202, response.text
        accepted.add(uuid.UUID(response.headers["Messenger-Message-Id"]))
        wait_for(lambda: len(poster.between(full_until, time.monotonic())) >= 3, timeout=60, what="3 posts")
    finally:
        poster.stop()

    # And the steady client got only 202s and 503s, never a 500 or another status: every POST
    # made while Redis was full a 503, every POST made after it was freed a 202
    statuses = [answer.status for answer in poster.answers]
    assert set(statuses) <= {202, 503}, statuses
    assert set(poster.between(full_since, full_until)) == {503}, statuses
    assert set(poster.between(full_until, time.monotonic())) == {202}, statuses
    accepted |= {uuid.UUID(a.message_id) for a in poster.answers if a.status == 202 and a.message_id}
    refused |= {uuid.UUID(a.message_id) for a in poster.answers if a.status == 503 and a.message_id}
    print(f"[oom] steady client: {statuses.count(202)} accepted, {statuses.count(503)} refused")

    # Then every message answered 202 is handled: 0 lost (the worker's fetches were refused
    # while Redis was full; its consumer restarts and goes on once there is room)
    wait_for(lambda: accepted <= handled_ids(), timeout=90, what="every accepted ping handled")
    # And no refused message was stored: none of them is ever handled (a refused enqueue
    # writes nothing, so a client's retry does not make a duplicate)
    time.sleep(2)
    assert handled_ids() & refused == set()
    # And the worker lived through it
    assert worker.popen.poll() is None, worker.log()[-4000:]
