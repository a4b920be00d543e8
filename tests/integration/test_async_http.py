"""The asynchronous HTTP contract against real processes: gunicorn, RabbitMQ, ``rundramatiq``.

A tracked POST is polled at its ``Location`` until a real worker handled it; another user
gets 404; a handler that fails for good reads ``failed``; clients racing with one
``Idempotency-Key`` dispatch once; a broker fault's 503 leaves the key usable.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User

from tests.faultproxy import FaultProxy
from tests.testapp.models import Effect

from .processes import start_server, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]

#: Generous: the machine running the suite may be loaded.
HANDLED_WITHIN = 60.0


@pytest.fixture
def ada() -> tuple[str, str]:
    User.objects.create_user("ada", password="ada-pw")
    return ("ada", "ada-pw")


@pytest.fixture
def eve() -> tuple[str, str]:
    User.objects.create_user("eve", password="eve-pw")
    return ("eve", "eve-pw")


def poll(url: str, auth: Any, until: set[str]) -> dict[str, Any]:
    """GET the status at ``url`` (waiting its Retry-After) until it reads one of ``until``."""
    seen: dict[str, Any] = {}

    def done() -> bool:
        response = requests.get(url, auth=auth, timeout=15)
        assert response.status_code == 200, response.text
        seen.update(response.json())
        if seen["status"] in until:
            return True
        time.sleep(float(response.headers.get("Retry-After", "0.2")) / 4)
        return False

    wait_for(done, timeout=HANDLED_WITHIN, interval=0.05, what=f"the status to read {until}")
    return seen


def test_a_tracked_post_is_polled_until_handled_by_a_real_worker(server, ada, eve):
    response = requests.post(f"{server}/tracked-pings/", json={"text": "tracked"}, auth=ada, timeout=15)
    assert response.status_code == 202, response.text
    message_id = response.headers["Messenger-Message-Id"]
    location = requests.compat.urljoin(server, response.headers["Location"])

    status = poll(location, ada, {"handled", "failed"})

    assert status["status"] == "handled"
    assert status["id"] == message_id
    assert Effect.objects.filter(handler="ping", message_id=message_id).count() == 1
    assert requests.get(location, auth=eve, timeout=15).status_code == 404
    assert requests.get(location, timeout=15).status_code == 404


def test_a_handler_failing_for_good_reads_failed(server, ada):
    # Flaky fails until fixed; max_retries=1, so after one retry it is dead-lettered.
    response = requests.post(
        f"{server}/tracked-flaky/", json={"text": f"never-{uuid.uuid4()}"}, auth=ada, timeout=15
    )
    assert response.status_code == 202, response.text
    location = requests.compat.urljoin(server, response.headers["Location"])

    status = poll(location, ada, {"handled", "failed"})

    assert status["status"] == "failed"
    assert status["error"]
    assert "NotFixedYet" not in status["error"]  # no exception text reaches a client


def test_clients_racing_with_one_key_dispatch_once_and_all_learn_one_message_id(server):
    # Anonymous clients: a password hash per request would only slow the race down.
    key = str(uuid.uuid4())
    text = f"race-{key[:8]}"
    clients = 8
    start = threading.Barrier(clients)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def client() -> None:
        start.wait(timeout=30)
        deadline = time.monotonic() + HANDLED_WITHIN
        while True:
            response = requests.post(
                f"{server}/tracked-pings/",
                json={"text": text},
                headers={"Idempotency-Key": key},
                timeout=60,
            )
            if response.status_code != 409 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # in flight: retry, as a client does after a 409
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANDLED_WITHIN + 30)

    assert len(answers) == clients
    assert {response.status_code for response in answers} == {202}
    assert len({response.headers["Messenger-Message-Id"] for response in answers}) == 1
    assert sum(response.headers.get("Idempotent-Replayed") == "true" for response in answers) == clients - 1
    message_id = answers[0].headers["Messenger-Message-Id"]
    wait_for(
        lambda: Effect.objects.filter(handler="ping", payload__text=text).exists(),
        timeout=HANDLED_WITHIN,
        what="the message to be handled",
    )
    time.sleep(1.0)  # a second dispatch, had there been one, would be handled by now too
    assert list(
        Effect.objects.filter(handler="ping", payload__text=text).values_list("message_id", flat=True)
    ) == [uuid.UUID(message_id)]


@pytest.fixture
def proxied_server(rabbitmq, process_env, log_dir) -> Iterator[tuple[str, FaultProxy]]:
    """A server sending to RabbitMQ through a FaultProxy."""
    with FaultProxy() as proxy:
        env = {
            **process_env,
            "MESSENGER_BROKER_URL": proxy.url().rsplit("/", 1)[0],
            "MESSENGER_PUBLISH_TIMEOUT": "1.5",
        }
        process, url = start_server(env, log_dir, wsgi="tests.integration.wsgi:application", threads=2)
        try:
            yield url, proxy
        finally:
            process.stop()


def test_a_broker_fault_503_keeps_the_key_usable(proxied_server, ada):
    url, proxy = proxied_server
    key = str(uuid.uuid4())
    text = f"fault-{key[:8]}"

    def send() -> requests.Response:
        return requests.post(
            f"{url}/tracked-pings/",
            json={"text": text},
            auth=ada,
            headers={"Idempotency-Key": key},
            timeout=30,
        )

    proxy.reset()
    refused = send()
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) > 0

    proxy.restore()
    accepted = send()
    assert accepted.status_code == 202, accepted.text
    assert "Idempotent-Replayed" not in accepted.headers
    replayed = send()
    assert replayed.status_code == 202
    assert replayed.headers["Messenger-Message-Id"] == accepted.headers["Messenger-Message-Id"]
    assert replayed.headers["Idempotent-Replayed"] == "true"
    wait_for(
        lambda: Effect.objects.filter(handler="ping", payload__text=text).exists(),
        timeout=HANDLED_WITHIN,
        what="the accepted message to be handled",
    )
