"""The broker contract (CONTRACT.md section 7), on every broker of :data:`.brokers.BROKERS`.

Each test runs once per broker, against its real server on loopback, with real gunicorn and
``rundramatiq`` processes: what a 202 promises holds the same on each of them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from django_messenger.models import FailedMessage, HandledMessage
from tests.faultproxy import FaultProxy
from tests.testapp.messages import Flaky, IdempotentWork, Ping, Work
from tests.testapp.models import Article, Effect

from ..processes import Process, manage, start_server, start_worker, wait_for
from ..rabbit import envelope_message
from .brokers import (
    POSTGRES_HEARTBEAT_TTL,
    PUBSUB_ACK_DEADLINE,
    REDIS_HEARTBEAT_TIMEOUT,
    SQS_VISIBILITY_TIMEOUT,
    enqueue,
)
from .conftest import PUBLISH_TIMEOUT

pytestmark = pytest.mark.django_db(transaction=True)

PING = "tests.testapp.handlers.handle"
FLAKY = "tests.testapp.handlers.flaky"
WORK = "tests.testapp.handlers.work"
WORK_ONCE = "tests.testapp.handlers.work_once"
#: What a worker logs when it acknowledges a message its idempotent handler already handled.
ALREADY_HANDLED = "was already handled by"
#: What a refusal may take beyond PUBLISH_TIMEOUT: HTTP, Django and process scheduling.
MARGIN = 2.0


def post(url: str, json: dict[str, object], timeout: float = 15) -> requests.Response:
    return requests.post(url, json=json, timeout=timeout)


def accepted_id(response: requests.Response) -> uuid.UUID:
    assert response.status_code == 202, response.text
    assert response.content == b""
    return uuid.UUID(response.headers["Messenger-Message-Id"])


def handled(message_id: uuid.UUID, handler: str = "ping") -> bool:
    return Effect.objects.filter(handler=handler, message_id=message_id).exists()


# --- the web side: a write answered 202 is handled by a worker ------------------------------------


def test_a_post_is_handled_by_the_worker(contract_server):
    # Given a server and a worker on the broker
    # When a command is POSTed
    message_id = accepted_id(post(f"{contract_server}/pings/", {"text": "over the broker"}))

    # Then the worker's handler applies it, with the id the 202 carried
    wait_for(lambda: handled(message_id), what="the ping's effect")
    assert Effect.objects.get(message_id=message_id).payload == {"text": "over the broker"}


def test_put_patch_and_delete_of_a_model_resource_are_applied(contract_server):
    accepted_id(post(f"{contract_server}/articles/", {"title": "Dune", "price": "9.99"}))
    article = wait_for(lambda: Article.objects.filter(title="Dune").first(), what="the POST")

    accepted_id(
        requests.put(f"{contract_server}/articles/{article.pk}/", json={"title": "Messiah"}, timeout=15)
    )
    wait_for(lambda: Article.objects.filter(pk=article.pk, title="Messiah").exists(), what="the PUT")

    accepted_id(
        requests.patch(f"{contract_server}/articles/{article.pk}/", json={"body": "sand"}, timeout=15)
    )
    wait_for(lambda: Article.objects.filter(pk=article.pk, body="sand").exists(), what="the PATCH")
    assert Article.objects.get(pk=article.pk).title == "Messiah"

    accepted_id(requests.delete(f"{contract_server}/articles/{article.pk}/", timeout=15))
    wait_for(lambda: not Article.objects.filter(pk=article.pk).exists(), what="the DELETE")


def test_two_handlers_of_one_type_both_run(contract_server):
    # Given Shout has two handlers: one publish, fanned out in the worker
    message_id = accepted_id(post(f"{contract_server}/shouts/", {"text": "everyone"}))

    # Then each of them applies it, once
    wait_for(
        lambda: (
            set(Effect.objects.filter(message_id=message_id).values_list("handler", flat=True))
            == {"shout_one", "shout_two"}
        ),
        what="both handlers",
    )
    assert Effect.objects.filter(message_id=message_id).count() == 2


def test_a_delayed_message_is_handled_when_due_and_not_before(contract_server):
    # Given a delay of 2.5 s, with DELAY_HOP at 1 s: the worker publishes it again twice
    delay = 2.5
    posted = time.monotonic()
    message_id = accepted_id(
        post(f"{contract_server}/delayed-pings/?delay_ms={int(delay * 1000)}", {"text": "later"})
    )

    # Then it is not handled before it is due (checked until just before the delay ran out) ...
    while time.monotonic() < posted + delay - 0.2:
        assert not handled(message_id), f"handled {time.monotonic() - posted:.2f}s after the POST"
        time.sleep(0.1)
    # ... and it is handled once due, once
    wait_for(lambda: handled(message_id), what="the delayed ping")
    assert Effect.objects.filter(message_id=message_id).count() == 1


# --- the worker side: retries, the failure store, poison ------------------------------------------


def test_retries_then_the_failure_store_then_messenger_failed_retry(
    contract_broker, own_env, log_dir, workers
):
    queue = own_env["MESSENGER_QUEUE"]
    workers.append(start_worker(own_env, log_dir, queues=[queue], threads=2))
    # Given a message whose handler (max_retries=1) fails until it is fixed
    envelope, message = envelope_message(queue, FLAKY, Flaky(text="contract"))
    enqueue(contract_broker, message)

    # When its retries are exhausted, Then the failure is stored and the message dead-lettered
    failed = wait_for(
        lambda: FailedMessage.objects.filter(message_id=envelope.message_id).first(), what="failure"
    )
    assert failed.tries == 2 and failed.handler == FLAKY and failed.queue_name == queue
    assert "NotFixedYet" in failed.error
    wait_for(lambda: contract_broker.dead_letters(queue) == 1, what="the dead letter")

    # When the cause is fixed and the failure retried, Then the handler applies it, and it is gone
    Effect.objects.create(handler="fixed", message_id=uuid.uuid4(), payload={"text": "contract"})
    retried = manage(own_env, "messenger_failed", "retry", str(envelope.message_id))
    assert retried.returncode == 0, retried.stderr
    wait_for(lambda: handled(envelope.message_id, "flaky"), what="the retried message")
    assert not FailedMessage.objects.filter(message_id=envelope.message_id).exists()


#: What a worker logs when it holds a failure it could not store (failures.hold).
HELD = "could not be stored ("


@pytest.fixture
def database_proxy() -> Iterator[FaultProxy]:
    """A FaultProxy in front of PostgreSQL, for the worker only (the test talks to it directly)."""
    with FaultProxy(upstream=("127.0.0.1", 5432)) as proxy:
        yield proxy


def test_a_failure_while_the_database_is_down_is_held_then_stored(
    contract_broker, own_env, log_dir, workers, database_proxy
):
    # Given a worker whose database connection runs through the proxy
    env = {**own_env, "MESSENGER_TEST_DB_PORT": str(database_proxy.port)}
    queue = env["MESSENGER_QUEUE"]
    worker = start_worker(env, log_dir, queues=[queue], threads=2)
    workers.append(worker)

    # When PostgreSQL becomes unreachable from it, and a handler fails for good meanwhile
    database_proxy.reset()
    envelope, message = envelope_message(queue, FLAKY, Flaky(text=f"outage {uuid.uuid4()}"))
    enqueue(contract_broker, message)

    if contract_broker.is_the_database:
        # Then (PostgreSQL: the broker is the database) the worker cannot even take the message:
        # it waits in its row, untried, while the worker keeps trying to reconnect
        time.sleep(5)  # many polls of the worker (poll_interval 0.5 s)
        assert contract_broker.rows(queue, "queued") == 1, "the message left its row during the outage"
        assert not FailedMessage.objects.filter(message_id=envelope.message_id).exists()
        cause = "NotFixedYet"  # when the database is back, the handler runs and fails as it would have
    else:
        # Then its failure is held on the broker (a delayed copy), again and again while the database is down
        def holds() -> int:
            lines = worker.log().splitlines()
            return sum(1 for line in lines if "[django_messenger]" in line and HELD in line)

        wait_for(lambda: holds() >= 2, timeout=30, what="the failure to be held twice")
        assert not FailedMessage.objects.filter(message_id=envelope.message_id).exists()
        cause = "OperationalError"

    # When the database is back, Then the failure is stored, once, and `retry` has it handled
    database_proxy.restore()
    failed = wait_for(
        lambda: FailedMessage.objects.filter(message_id=envelope.message_id).first(),
        timeout=60,
        what="the failure to be stored",
    )
    assert failed.handler == FLAKY and failed.tries == 2 and cause in failed.error
    listed = manage(env, "messenger_failed", "list")
    assert listed.returncode == 0 and str(envelope.message_id) in listed.stdout, listed.stderr
    Effect.objects.create(handler="fixed", message_id=uuid.uuid4(), payload={"text": envelope.message.text})
    retried = manage(env, "messenger_failed", "retry", str(envelope.message_id))
    assert retried.returncode == 0, retried.stderr
    wait_for(lambda: handled(envelope.message_id, "flaky"), what="the retried message to be handled")
    assert FailedMessage.objects.filter(message_id=envelope.message_id).count() == 0


def poison(queue: str) -> list[tuple[str, str, dict[str, object]]]:
    """Messages a worker must dead-letter: (what, actor, payload)."""

    def payload(type_name: str, body: dict[str, object]) -> dict[str, object]:
        return {"v": 1, "id": str(uuid.uuid4()), "type": type_name, "body": body, "stamps": []}

    return [
        ("unknown type", PING, payload("os.system", {})),
        ("body that does not fit", PING, payload("testapp.Ping", {"x": 1})),
        ("unknown actor", "os.system", payload("testapp.Ping", {"text": "hi"})),
    ]


def test_poison_is_dead_lettered_and_the_worker_goes_on(contract_broker, own_env, log_dir, workers):
    from dramatiq import Message

    queue = own_env["MESSENGER_QUEUE"]
    workers.append(start_worker(own_env, log_dir, queues=[queue], threads=2))
    # Given bad messages on the queue, then a good one
    bad = [
        Message(queue_name=queue, actor_name=actor, args=(body,), kwargs={}, options={})
        for _, actor, body in poison(queue)
    ]
    good, good_message = envelope_message(queue, PING, Ping(text="after the poison"))
    enqueue(contract_broker, *bad, good_message)

    # Then the good one is handled, and every bad one is dead-lettered and stored as a failure
    wait_for(lambda: handled(good.message_id), what="the good message")
    wait_for(
        lambda: contract_broker.dead_letters(queue) == len(bad), what="every poison message dead-lettered"
    )
    wait_for(lambda: FailedMessage.objects.count() == len(bad), what="every poison message stored")
    assert all(failed.tries == 1 for failed in FailedMessage.objects.all())


def test_bytes_that_are_not_a_message_are_dead_lettered_and_the_worker_goes_on(
    contract_broker, own_env, log_dir, workers
):
    queue = own_env["MESSENGER_QUEUE"]
    env = {**own_env, **contract_broker.dead_lettering_env}
    workers.append(start_worker(env, log_dir, queues=[queue], threads=2))
    # Given bytes that are not even JSON, a body too large to parse (BoundedJSONEncoder), and
    # messages whose fields Dramatiq's worker would trip on (a queue it does not consume: the end
    # of a worker thread; options or an actor name of another type: a consumer that restarts
    # on the same message forever; django_messenger/brokers/guard.py), then good ones
    too_large = contract_broker.max_body_size() + 1
    _, forgeable = envelope_message(queue, PING, Ping(text="forged"))
    fields = forgeable.asdict() | {"args": list(forgeable.args)}
    forged = [
        fields | {"message_id": str(uuid.uuid4())} | wrong
        for wrong in ({"queue_name": "nowhere"}, {"options": 5}, {"actor_name": []})
    ]
    undecodable = [
        b'{"queue_name": "not json',
        b'{"queue_name": "' + b"x" * too_large + b'"}',
        *(json.dumps(body).encode() for body in forged),
    ]
    for body in undecodable:
        contract_broker.put_raw(queue, body)
    good = []
    for n in range(3):
        envelope, message = envelope_message(queue, PING, Ping(text=f"after the bytes {n}"))
        good.append(envelope.message_id)
        enqueue(contract_broker, message)

    # Then the good ones are handled, and the undecodable bodies are dead-lettered
    wait_for(lambda: all(handled(message_id) for message_id in good), what="the good messages")
    wait_for(lambda: contract_broker.dead_letters(queue) == len(undecodable), what="the bodies dead-lettered")


# --- faults: the broker unreachable, a worker killed ----------------------------------------------


def timed_post(url: str, text: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = post(f"{url}/pings/", {"text": text}, timeout=PUBLISH_TIMEOUT + 30)
    return response, time.monotonic() - started


def test_an_unreachable_broker_is_a_503_in_time_then_202_again(
    contract_broker, contract_env, contract_worker, broker_proxy, log_dir
):
    # Given a server whose broker connection runs through a fault proxy
    env = {**contract_env, **contract_broker.env(port=broker_proxy.port)}
    server, url = start_server(env, log_dir, wsgi="tests.integration.wsgi:application", threads=2)
    try:
        before = accepted_id(timed_post(url, "before")[0])
        wait_for(lambda: handled(before), what="the ping before the fault")

        for fault in ("blackhole", "reset"):
            # When the broker goes silent, or resets every connection
            getattr(broker_proxy, fault)()
            response, elapsed = timed_post(url, f"during {fault}")
            # Then the write is refused within PUBLISH_TIMEOUT: 503, Retry-After, the attempt's id
            print(f"[contract {contract_broker.name}] {fault}: {response.status_code} after {elapsed:.2f}s")
            assert response.status_code == 503, response.text
            assert int(response.headers["Retry-After"]) > 0
            uuid.UUID(response.headers["Messenger-Message-Id"])
            assert elapsed < PUBLISH_TIMEOUT + MARGIN, f"{fault}: refused after {elapsed:.2f}s"
            for internal in (broker_proxy.host, str(broker_proxy.port), contract_broker.name):
                assert internal.lower() not in response.text.lower(), response.text

            # When it is reachable again, Then writes are accepted and handled, with no restart
            broker_proxy.restore()
            after = accepted_after_recovery(url, f"after {fault}")
            wait_for(lambda after=after: handled(after), what=f"the ping after {fault}")
    finally:
        server.stop()


#: How long writes may still be refused once the broker is reachable again: a client library
#: reconnects with a backoff (librdkafka's, after the reset of every connection, took longer
#: than one PUBLISH_TIMEOUT once in CI). A client retries a 503 after its Retry-After.
RECOVERY = 10.0


def accepted_after_recovery(url: str, text: str) -> uuid.UUID:
    """The id of the first write accepted within :data:`RECOVERY`; each refusal before it a 503."""
    deadline = time.monotonic() + RECOVERY
    while True:
        response, _ = timed_post(url, text)
        if response.status_code == 202 or time.monotonic() > deadline:
            return accepted_id(response)
        assert response.status_code == 503, response.text  # refused as it should be, nothing else
        time.sleep(0.5)


def redeliveries_skipped(worker: Process) -> int:
    """The messages ``worker`` acknowledged without running their idempotent handler (Dramatiq's
    log lines only: the settings' console handler writes each record to the log a second time)."""
    return sum(
        1 for line in worker.log().splitlines() if "[django_messenger]" in line and ALREADY_HANDLED in line
    )


#: Messages of each handler, the plain and the idempotent one, in the SIGKILL case.
EACH = 150


def test_a_worker_sigkilled_mid_run_loses_no_message(contract_broker, own_env, log_dir, workers, capsys):
    queue = own_env["MESSENGER_QUEUE"]
    # Given 300 messages on the queue, half for a handler and half for an idempotent one,
    # interleaved, each 20 ms of work (1.5 s for a worker of 4 threads)
    sent: dict[str, set[uuid.UUID]] = {"work": set(), "work_once": set()}
    messages = []
    for n in range(EACH):
        for effect, actor, message_class in (("work", WORK, Work), ("work_once", WORK_ONCE, IdempotentWork)):
            envelope, message = envelope_message(queue, actor, message_class(n=n, sleep_ms=20))
            sent[effect].add(envelope.message_id)
            messages.append(message)
    enqueue(contract_broker, *messages)

    def done(effect: str) -> int:
        return Effect.objects.filter(handler=effect).values("message_id").distinct().count()

    # When a worker is SIGKILLed mid-run, and another one started
    worker = start_worker(own_env, log_dir, queues=[queue], threads=4)
    workers.append(worker)
    wait_for(lambda: done("work") + done("work_once") >= 100, timeout=120, what="100 handled")
    worker.kill()
    assert done("work") + done("work_once") < len(messages), (
        "the worker handled every message before it was killed"
    )
    second = start_worker(own_env, log_dir, queues=[queue], threads=4)
    workers.append(second)

    # Then every message is handled (on Redis once the dead worker's heartbeat timed out, on SQS
    # once the visibility timeout of the messages it held ran out), the idempotent ones once
    wait_for(
        lambda: done("work") >= EACH and done("work_once") >= EACH,
        timeout=120
        + max(
            REDIS_HEARTBEAT_TIMEOUT / 1000,
            SQS_VISIBILITY_TIMEOUT,
            POSTGRES_HEARTBEAT_TTL,
            PUBSUB_ACK_DEADLINE,
        ),
        what="every message",
    )
    for effect, ids in sent.items():
        seen = set(Effect.objects.filter(handler=effect).values_list("message_id", flat=True))
        assert ids - seen == set(), f"{effect}: lost"
    once_rows = Effect.objects.filter(handler="work_once").count()
    skipped = sum(redeliveries_skipped(process) for process in (worker, second))
    with capsys.disabled():
        print(
            f"\n[contract {contract_broker.name}] SIGKILL: work duplicates="
            f"{Effect.objects.filter(handler='work').count() - EACH}, work_once duplicate effects="
            f"{once_rows - EACH}, redeliveries acknowledged without running={skipped}"
        )
    assert once_rows == EACH
    assert HandledMessage.objects.filter(handler=WORK_ONCE).count() == EACH


def test_a_message_redelivered_after_its_idempotent_handler_committed_runs_nothing_again(
    contract_broker, own_env, log_dir, workers
):
    queue = own_env["MESSENGER_QUEUE"]
    # Given an idempotent handler whose worker holds the message 60 s after its commit, before the ack
    worker = start_worker(own_env, log_dir, queues=[queue], threads=1)
    workers.append(worker)
    envelope, message = envelope_message(queue, WORK_ONCE, IdempotentWork(n=1, hold_ms=60_000))
    enqueue(contract_broker, message)
    wait_for(lambda: handled(envelope.message_id, "work_once"), timeout=60, what="the handler's commit")

    # When the worker is SIGKILLed in that window, and another one started
    worker.kill()
    second = start_worker(own_env, log_dir, queues=[queue], threads=1)
    workers.append(second)

    # Then the broker redelivers the message (Redis, PostgreSQL: after the dead worker's heartbeat
    # timed out; SQS: after the visibility timeout), and it is acknowledged without running the handler again
    wait_for(
        lambda: redeliveries_skipped(second) >= 1,
        timeout=60
        + max(
            REDIS_HEARTBEAT_TIMEOUT / 1000,
            SQS_VISIBILITY_TIMEOUT,
            POSTGRES_HEARTBEAT_TTL,
            PUBSUB_ACK_DEADLINE,
        ),
        what="the redelivery to be acknowledged",
    )
    assert f"Message {envelope.message_id} {ALREADY_HANDLED} {WORK_ONCE}" in second.log()
    assert redeliveries_skipped(second) == 1
    assert Effect.objects.filter(handler="work_once", message_id=envelope.message_id).count() == 1
    assert HandledMessage.objects.filter(message_id=envelope.message_id).count() == 1
    assert contract_broker.dead_letters(queue) == 0
