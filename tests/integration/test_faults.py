"""Broker faults at the HTTP edge: a real server whose broker connection runs through a
fault-injecting TCP proxy. Under each fault a write is a 503 within PUBLISH_TIMEOUT plus a
margin (never a 202, never a hang); once the broker is back, writes are 202 again with no
restart; every 202 message is handled. The server runs with ATOMIC_REQUESTS = True.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.faultproxy import FaultProxy
from tests.testapp.models import Effect

from .processes import Process, start_server, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]

PUBLISH_TIMEOUT = 1.5
#: What the bound allows beyond PUBLISH_TIMEOUT: HTTP, Django and process scheduling.
MARGIN = 2.0


@pytest.fixture(scope="module")
def proxy(rabbitmq: str) -> Iterator[FaultProxy]:
    with FaultProxy() as fault_proxy:
        yield fault_proxy


#: The process behind each proxied server's URL: its log holds what a client must not see.
_server_processes: dict[str, Process] = {}


@pytest.fixture(scope="module")
def proxied_server(proxy, process_env, log_dir) -> Iterator[str]:
    """A gthread server (2 threads) sending through ``proxy``."""
    env = {
        **process_env,
        "MESSENGER_BROKER_URL": proxy.url().rsplit("/", 1)[0],
        "MESSENGER_PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
        "MESSENGER_ATOMIC_REQUESTS": "1",
    }
    process, url = start_server(env, log_dir, wsgi="tests.integration.wsgi:application", threads=2)
    _server_processes[url] = process
    yield url
    process.stop()


@pytest.fixture(autouse=True)
def healthy(proxy) -> Iterator[None]:
    proxy.restore()
    yield
    proxy.restore()


def timed_post(url: str, text: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.post(f"{url}/pings/", json={"text": text}, timeout=PUBLISH_TIMEOUT + 30)
    return response, time.monotonic() - started


def assert_refused_in_time(response: requests.Response, elapsed: float, fault: str = "") -> None:
    # Printed for docs/reliability.md (run with -s to see it).
    print(f"[fault test] {fault}: {response.status_code} after {elapsed:.2f}s (timeout {PUBLISH_TIMEOUT}s)")
    assert response.status_code == 503, response.text
    assert "may or may not have been accepted" in response.json()["detail"]
    assert int(response.headers["Retry-After"]) > 0
    assert elapsed < PUBLISH_TIMEOUT + MARGIN, f"took {elapsed:.2f}s"


def assert_the_client_learns_the_id_and_the_log_the_cause(
    url: str, proxy: FaultProxy, response: requests.Response
) -> str:
    """The 503 names the attempt (Messenger-Message-Id) but not our broker; the server's log names both.

    Returns the server's log line about the attempt.
    """
    message_id = str(uuid.UUID(response.headers["Messenger-Message-Id"]))
    for internal in (proxy.host, str(proxy.port), "RabbitMQ", "pika", "Error", "PUBLISH_TIMEOUT"):
        assert internal not in response.text, f"the 503 shows {internal!r}: {response.text}"
    process = _server_processes[url]
    wait_for(lambda: message_id in process.log(), what="the warning with the message id in the server log")
    [line] = [line for line in process.log().splitlines() if message_id in line]
    assert "RabbitMQ" in line, line
    return line


def assert_accepted_and_handled(url: str, text: str) -> None:
    response, _ = timed_post(url, text)
    assert response.status_code == 202, response.text
    message_id = uuid.UUID(response.headers["Messenger-Message-Id"])
    wait_for(lambda: Effect.objects.filter(message_id=message_id).exists(), what=f"the handling of {text}")


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
def test_a_fault_on_an_open_connection_is_a_503_in_time_then_recovers(proxied_server, proxy, fault):
    # Given a server whose broker connection is open and working
    assert_accepted_and_handled(proxied_server, f"before {fault}")

    # When the connection is cut (reset) or goes silent (black hole)
    getattr(proxy, fault)()
    for attempt in range(2):
        response, elapsed = timed_post(proxied_server, f"during {fault} {attempt}")
        # Then every write is refused in time, and nothing is accepted
        assert_refused_in_time(response, elapsed, f"{fault} on an open connection, attempt {attempt}")
        assert_the_client_learns_the_id_and_the_log_the_cause(proxied_server, proxy, response)

    # When the broker is reachable again, writes are accepted with no restart
    proxy.restore()
    assert_accepted_and_handled(proxied_server, f"after {fault}")


def test_a_broker_that_refuses_new_connections_is_a_503(proxied_server, proxy):
    proxy.reset()

    response, elapsed = timed_post(proxied_server, "refused")

    assert_refused_in_time(response, elapsed, "new connections reset")
    # The connection error names the proxy's host and port: in the log only
    line = assert_the_client_learns_the_id_and_the_log_the_cause(proxied_server, proxy, response)
    assert f"{proxy.host}:{proxy.port}" in line, line


def test_a_malformed_write_is_still_a_400_while_the_broker_is_down(proxied_server, proxy):
    proxy.blackhole()

    response = requests.post(f"{proxied_server}/pings/", json={"text": ""}, timeout=10)

    assert response.status_code == 400
