"""django_messenger.brokers.pubsub: the broker's own logic, against Google's Pub/Sub emulator.

The emulator runs as its own process on a free loopback port (tests/pubsub_emulator.py),
started once for this module; each test uses queues of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dramatiq import Message
from dramatiq.errors import ConnectionClosed
from google.pubsub_v1 import types

from django_messenger.brokers import pubsub as pubsub_module
from django_messenger.brokers.pubsub import (
    MAX_MESSAGE_BYTES,
    MessageTooLargeForPubSub,
    PubSubBroker,
    PubSubConsumer,
    PubSubMessage,
    resource_id,
)
from django_messenger.exceptions import BrokerUnavailable, MessageTooLarge
from django_messenger.publishing import publish
from tests.pubsub_emulator import PROJECT_ID, PubSubEmulator, require_emulator
from tests.pubsub_fake import FakePubSub


@pytest.fixture(scope="module")
def emulator() -> Iterator[PubSubEmulator]:
    require_emulator()
    with PubSubEmulator() as running:
        yield running


@pytest.fixture
def make_broker(emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    made: list[PubSubBroker] = []

    def make(**options: Any) -> PubSubBroker:
        options.setdefault("middleware", [])
        options.setdefault("project_id", PROJECT_ID)
        options.setdefault("ack_deadline", 10)
        broker = PubSubBroker(namespace=f"t{uuid.uuid4().hex[:10]}", **options)
        broker.declare_queue("q")
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def message(queue: str = "q", **options: Any) -> Message[Any]:
    return Message(queue_name=queue, actor_name="an_actor", args=({"n": 1},), kwargs={}, options=options)


def take(consumer: PubSubConsumer, count: int, timeout: float = 10.0) -> list[Any]:
    """The next ``count`` messages of ``consumer`` (fewer if none come within ``timeout``)."""
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        got = next(consumer)
        if got is not None:
            found.append(got)
    return found


def pulled(broker: PubSubBroker, queue: str, timeout: float = 3.0) -> list[Any]:
    """What a pull of ``queue``'s subscription finds now (left leased)."""
    response = broker.subscriber.pull(
        request={"subscription": broker.subscription_path(queue), "max_messages": 100}, timeout=timeout
    )
    return list(response.received_messages)


# --- no network needed ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["_private", "ab", "goog-queue", "has space", "x" * 256])
def test_names_pubsub_refuses_are_refused_when_declared(name: str) -> None:
    with pytest.raises(ValueError, match="cannot name a Pub/Sub topic"):
        resource_id(None, name)
    with pytest.raises(ValueError):
        PubSubBroker(project_id=PROJECT_ID, middleware=[]).declare_queue(name)


def test_a_namespace_prefixes_every_topic_and_subscription() -> None:
    broker = PubSubBroker(project_id=PROJECT_ID, namespace="shop", middleware=[])

    assert broker.topic_path("mail.DQ") == f"projects/{PROJECT_ID}/topics/shop.mail.DQ"
    assert broker.subscription_path("mail") == f"projects/{PROJECT_ID}/subscriptions/shop.mail"
    assert resource_id(None, "mail") == "mail"


@pytest.mark.parametrize(
    "options",
    [
        {"ack_deadline": 9},
        {"ack_deadline": 601},
        {"max_deliveries": 4},
        {"max_deliveries": 101},
        {"min_backoff": 5, "max_backoff": 1},
        {"max_backoff": 601},
        {"publish_timeout": 0},
    ],
)
def test_options_out_of_pubsubs_ranges_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PubSubBroker(project_id=PROJECT_ID, middleware=[], **options)


def test_a_missing_project_id_is_explained_at_first_use() -> None:
    broker = PubSubBroker(middleware=[])
    with pytest.raises(ValueError, match="project_id is None"):
        broker.topic_path("q")


def test_the_publish_timeout_is_messengers_unless_the_broker_has_its_own(settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "PUBLISH_TIMEOUT": 1.25}

    assert PubSubBroker(project_id=PROJECT_ID, middleware=[]).publish_timeout == 1.25
    assert PubSubBroker(project_id=PROJECT_ID, middleware=[], publish_timeout=0.5).publish_timeout == 0.5


def test_a_message_larger_than_pubsub_takes_is_a_413_not_a_503() -> None:
    broker = PubSubBroker(project_id=PROJECT_ID, middleware=[])
    broker.declare_queue("big")
    big = Message(queue_name="big", actor_name="a", args=("x" * MAX_MESSAGE_BYTES,), kwargs={}, options={})

    with pytest.raises(MessageTooLargeForPubSub) as caught:
        publish(broker, big)

    assert isinstance(caught.value, MessageTooLarge)
    assert caught.value.size > MAX_MESSAGE_BYTES


def test_a_silent_server_is_a_broker_unavailable_within_publish_timeout(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a server that accepts connections and never answers
    settings.MESSENGER = {**settings.MESSENGER, "PUBLISH_TIMEOUT": 1.0}
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{silent.getsockname()[1]}")
        broker = PubSubBroker(project_id=PROJECT_ID, middleware=[])
        broker.declare_queue("silent")

        broker.publisher  # noqa: B018  (made before the send, to see it replaced)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            publish(broker, message("silent"))
        elapsed = time.monotonic() - started
        assert broker._publisher is None  # its channel may be stuck: the next send makes a new one
        broker.close()

    assert elapsed < 1.0 + 1.0, f"refused after {elapsed:.2f}s"


# --- against the emulator -------------------------------------------------------------------------


def test_queues_get_a_delay_and_a_dead_letter_subscription_with_the_policies(make_broker: Any) -> None:
    broker = make_broker(max_deliveries=7, min_backoff=2, max_backoff=30, message_ordering=True)

    broker.ensure("q")

    main = broker.subscriber.get_subscription(subscription=broker.subscription_path("q"))
    assert main.ack_deadline_seconds == 10
    assert main.dead_letter_policy.dead_letter_topic == broker.topic_path("q.XQ")
    assert main.dead_letter_policy.max_delivery_attempts == 7
    assert main.retry_policy.minimum_backoff.total_seconds() == 2
    assert main.retry_policy.maximum_backoff.total_seconds() == 30
    assert main.enable_message_ordering
    for other in ("q.DQ", "q.XQ"):
        found = broker.subscriber.get_subscription(subscription=broker.subscription_path(other))
        assert found.topic == broker.topic_path(other)


def test_an_enqueue_returns_once_the_server_has_the_message(make_broker: Any) -> None:
    broker = make_broker()
    sent = broker.enqueue(message())

    [received] = pulled(broker, "q")
    assert Message.decode(received.message.data).message_id == sent.message_id


def test_a_send_to_a_deleted_topic_fails_instead_of_being_lost(make_broker: Any) -> None:
    broker = make_broker()
    broker.ensure("q")
    client = broker.publisher
    client.delete_topic(topic=broker.topic_path("q"))

    with pytest.raises(BrokerUnavailable):
        publish(broker, message())
    assert broker.publisher is client  # an answer, not an unreachable server: the client stays


def test_a_delayed_message_goes_to_the_delay_topic_with_its_eta(make_broker: Any) -> None:
    broker = make_broker()
    before = int(time.time() * 1000)

    sent = broker.enqueue(message(), delay=60_000)

    assert sent.queue_name == "q.DQ"
    [received] = pulled(broker, "q.DQ")
    delayed = Message.decode(received.message.data)
    assert delayed.queue_name == "q.DQ"
    assert before + 60_000 <= delayed.options["eta"] <= int(time.time() * 1000) + 60_000
    assert pulled(broker, "q", timeout=2) == []


def test_the_prefetch_bounds_what_a_consumer_holds(make_broker: Any) -> None:
    broker = make_broker()
    for _ in range(5):
        broker.enqueue(message())
    consumer = broker.consume("q", prefetch=2, timeout=500)

    first = take(consumer, 5, timeout=3)
    assert len(first) == 2  # held, not acknowledged: no more is pulled

    consumer.ack(first[0])
    assert len(take(consumer, 5, timeout=3)) == 1
    consumer.close()


def test_ack_settles_nack_dead_letters_and_requeue_gives_back(make_broker: Any) -> None:
    broker = make_broker()
    ids = [broker.enqueue(message()).message_id for _ in range(3)]
    consumer = broker.consume("q", prefetch=3, timeout=500)
    acked, nacked, given_back = sorted(take(consumer, 3), key=lambda m: ids.index(m.message_id))

    consumer.ack(acked)
    nacked.options["traceback"] = "the handler's"
    consumer.nack(nacked)
    consumer.requeue([given_back])

    assert broker.leases.count(consumer.subscription) == 0
    [dead] = pulled(broker, "q.XQ")
    assert Message.decode(dead.message.data).message_id == nacked.message_id
    assert Message.decode(dead.message.data).options["traceback"] == "the handler's"
    again = take(consumer, 1)
    assert [m.message_id for m in again] == [given_back.message_id]
    consumer.close()


def test_bodies_that_are_not_messages_are_dead_lettered_and_the_next_one_comes(make_broker: Any) -> None:
    broker = make_broker()
    broker.publish_data("q", b'{"queue_name": "not json')
    good = broker.enqueue(message())
    consumer = broker.consume("q", prefetch=4, timeout=500)

    assert [m.message_id for m in take(consumer, 1)] == [good.message_id]
    [dead] = pulled(broker, "q.XQ")
    assert bytes(dead.message.data) == b'{"queue_name": "not json'
    consumer.close()


def test_closing_a_consumer_gives_back_what_it_prefetched(make_broker: Any) -> None:
    broker = make_broker()
    for _ in range(2):
        broker.enqueue(message())
    consumer = broker.consume("q", prefetch=2, timeout=500)
    consumer.pull(2)
    assert len(consumer.buffer) == 2

    consumer.close()

    assert broker.leases.count(consumer.subscription) == 0
    assert len(take(broker.consume("q", prefetch=2, timeout=500), 2)) == 2


def test_a_message_never_acknowledged_is_dead_lettered_by_pubsub(make_broker: Any) -> None:
    # Given a subscription that dead-letters after 5 deliveries, retried at once
    broker = make_broker(max_deliveries=5, min_backoff=0, max_backoff=0)
    sent = broker.enqueue(message())
    consumer = broker.consume("q", prefetch=1, timeout=500)

    # When five deliveries are given back (as a worker that dies on the message would leave it)
    attempts = []
    for _ in range(5):
        [got] = take(consumer, 1, timeout=15)
        attempts.append(got._delivery_attempt)
        consumer.requeue([got])

    # Then Pub/Sub moves it to the dead letters, untouched
    assert attempts == [1, 2, 3, 4, 5]
    assert take(consumer, 1, timeout=3) == []
    deadline = time.monotonic() + 15
    while not (dead := pulled(broker, "q.XQ", timeout=2)) and time.monotonic() < deadline:
        pass
    assert [Message.decode(d.message.data).message_id for d in dead] == [sent.message_id]


def test_ordering_keys_are_published_when_ordering_is_on(make_broker: Any) -> None:
    broker = make_broker(message_ordering=True)
    for n in range(5):
        broker.enqueue(
            Message(queue_name="q", actor_name="a", args=(n,), kwargs={}, options={"ordering_key": "k1"})
        )

    received = pulled(broker, "q")

    assert {r.message.ordering_key for r in received} == {"k1"}
    assert [Message.decode(r.message.data).args[0] for r in received] == sorted(
        Message.decode(r.message.data).args[0] for r in received
    )


def test_no_ordering_key_without_message_ordering(make_broker: Any) -> None:
    broker = make_broker()
    broker.enqueue(message(ordering_key="k1"))

    [received] = pulled(broker, "q")
    assert received.message.ordering_key == ""


def test_the_emulator_keeps_subscriptions_that_never_expire(make_broker: Any) -> None:
    broker = make_broker()

    broker.ensure("q")

    # (the emulator refuses more than 7 days' retention: the broker falls back to its default, below)
    for name in ("q", "q.DQ", "q.XQ"):
        found = broker.subscriber.get_subscription(subscription=broker.subscription_path(name))
        assert "expiration_policy" in found and "ttl" not in found.expiration_policy, name


def test_with_create_false_a_topic_without_its_subscription_is_a_503_not_a_lost_message(
    make_broker: Any,
) -> None:
    # Given the queue's topics made by hand, its subscriptions not (yet)
    broker = make_broker(create=False)
    for name in ("q", "q.DQ", "q.XQ"):
        broker.publisher.create_topic(name=broker.topic_path(name))

    # When a message is sent, Then a 503: a 202 would be a message that no subscription keeps
    with pytest.raises(BrokerUnavailable):
        publish(broker, message())

    # And once a process that may create made them, the sends go
    maker = make_broker(create=True)
    maker.namespace = broker.namespace
    maker.ensure("q")
    sent = publish(broker, message())
    [received] = pulled(broker, "q")
    assert Message.decode(received.message.data).message_id == sent.message_id


def test_a_nack_after_the_dead_letters_were_deleted_makes_them_again(make_broker: Any) -> None:
    # Given a failed message held by a worker, and its dead-letter topic and subscription deleted
    broker = make_broker()
    sent = broker.enqueue(message())
    consumer = broker.consume("q", prefetch=1, timeout=500)
    [failed] = take(consumer, 1)
    broker.subscriber.delete_subscription(subscription=broker.subscription_path("q.XQ"))
    broker.publisher.delete_topic(topic=broker.topic_path("q.XQ"))

    # When Dramatiq nacks it
    consumer.nack(failed)

    # Then the dead letters are made again and keep it
    [dead] = pulled(broker, "q.XQ")
    assert Message.decode(dead.message.data).message_id == sent.message_id
    consumer.close()


# --- the docs' plain-Dramatiq example -------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "transports.md"
EXAMPLE_MARK = "<!-- pubsub-example -->\n```python\n"


def docs_example() -> str:
    text = DOCS.read_text()
    start = text.index(EXAMPLE_MARK) + len(EXAMPLE_MARK)
    return text[start : text.index("```", start)]


def test_the_docs_plain_dramatiq_example_runs_without_django(
    emulator: PubSubEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the docs' tasks.py, and the dramatiq CLI's worker on it, with no Django settings
    (tmp_path / "tasks.py").write_text(docs_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO")}
    env.update(PUBSUB_EMULATOR_HOST=emulator.host, PYTHONPATH=str(tmp_path), dramatiq_restart_delay="500")
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "tasks", "--processes", "1", "--threads", "2"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # When the docs' sends run
        sent = subprocess.run(
            [
                sys.executable,
                "-c",
                'import tasks; tasks.greet.send("Ada"); '
                'tasks.greet.send_with_options(args=("Bob",), delay=2000); tasks.fail.send("Eve")',
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr.decode()

        # Then the worker greets both, and the failing message ends in the dead letters
        deadline = time.monotonic() + 60
        output = ""
        while time.monotonic() < deadline:
            output = (tmp_path / "worker.log").read_text(errors="replace")
            if "Hello, Bob!" in output and "Retries exceeded" in output:
                break
            time.sleep(0.2)
        assert "Hello, Ada!" in output and "Hello, Bob!" in output, output[-3000:]
        assert "Retries exceeded" in output, output[-3000:]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        log.close()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    broker = PubSubBroker(project_id="my-project", namespace="example", middleware=[])
    broker.declare_queue("greetings")
    dead = []
    deadline = time.monotonic() + 10
    while not dead and time.monotonic() < deadline:
        dead = pulled(broker, "greetings.XQ", timeout=2)
    assert [Message.decode(d.message.data).actor_name for d in dead] == ["fail"]
    broker.close()


def test_a_delay_consumer_that_closes_gives_back_the_delayed_messages_dramatiq_dropped(
    make_broker: Any,
) -> None:
    # Given a delayed message held by a worker's delay consumer (in Dramatiq's memory, leased)
    broker = make_broker()
    sent = broker.enqueue(message(), delay=3_600_000)
    consumer = broker.consume("q.DQ", prefetch=10, timeout=500)
    [held] = take(consumer, 1)

    # When the consumer closes after a connection error (Dramatiq drops what it held, no requeue)
    consumer.close()

    # Then the lease ends and Pub/Sub delivers the message again to the next consumer
    assert broker.leases.count(consumer.subscription) == 0
    again = take(broker.consume("q.DQ", prefetch=10, timeout=500), 1)
    assert [m.message_id for m in again] == [sent.message_id] == [held.message_id]


def test_a_give_back_that_fails_still_ends_the_leases(
    make_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make_broker()
    broker.enqueue(message())
    consumer = broker.consume("q", prefetch=1, timeout=500)
    [got] = take(consumer, 1)

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionClosed(RuntimeError("Pub/Sub unreachable"))

    monkeypatch.setattr(broker, "_settle", unreachable)
    with pytest.raises(ConnectionClosed):
        consumer.requeue([got])

    assert broker.leases.count(consumer.subscription) == 0  # its deadline runs out: delivered again


# --- a scripted server: outages, refusals and permissions the emulator cannot show ---------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePubSub]:
    with FakePubSub() as running:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", running.host)
        yield running


@pytest.fixture
def fake_broker(fake: FakePubSub) -> Iterator[Any]:
    made: list[PubSubBroker] = []

    def make(**options: Any) -> PubSubBroker:
        options.setdefault("middleware", [])
        options.setdefault("project_id", PROJECT_ID)
        options.setdefault("ack_deadline", 10)
        broker = PubSubBroker(namespace="fake", **options)
        broker.declare_queue("q")
        broker.leases._run = lambda: None  # type: ignore[method-assign]  # the tests call extend()
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def short_worker_calls(monkeypatch: pytest.MonkeyPatch) -> float:
    """A worker call's bound, short for the tests (10 s in the broker)."""
    monkeypatch.setattr(pubsub_module, "WORKER_CALL_TIMEOUT", 1.0)
    return 1.0


def pubsub_message(ack_id: str, queue: str = "q") -> PubSubMessage:
    return PubSubMessage(message(queue), ack_id=ack_id, delivery_attempt=1)


def test_an_acknowledgement_during_an_outage_fails_within_its_bound_and_ends_the_lease(
    fake: FakePubSub, fake_broker: Any, short_worker_calls: float
) -> None:
    # Given a held message, and Pub/Sub answering UNAVAILABLE
    broker = fake_broker()
    subscription = broker.subscription_path("q")
    broker.leases.hold(subscription, ["a1"])
    fake.fail("Acknowledge", grpc.StatusCode.UNAVAILABLE)

    # When it is acknowledged
    started = time.monotonic()
    with pytest.raises(ConnectionClosed):  # Dramatiq's: it tries the ack again later
        broker.acknowledge("q", ["a1"])
    elapsed = time.monotonic() - started

    # Then one call, within the worker call's bound (no hidden 60 s retry ending in RetryError),
    # and the message is no longer extended: Pub/Sub delivers it again after its deadline
    assert len(fake.requests("Acknowledge")) == 1
    assert elapsed < short_worker_calls + 1.0, f"failed after {elapsed:.2f}s"
    assert broker.leases.count(subscription) == 0


def test_an_acknowledgement_pubsub_refuses_is_not_tried_for_ever(
    fake: FakePubSub, fake_broker: Any, short_worker_calls: float
) -> None:
    # Given an ack id Pub/Sub no longer takes
    broker = fake_broker()
    broker.leases.hold(broker.subscription_path("q"), ["stale"])
    fake.fail("Acknowledge", grpc.StatusCode.INVALID_ARGUMENT)

    # When it is acknowledged, Then no ConnectionClosed (Dramatiq would try again every 5 s, for ever)
    broker.acknowledge("q", ["stale"])

    assert broker.leases.count(broker.subscription_path("q")) == 0


def test_the_lease_thread_survives_an_outage(
    fake: FakePubSub, fake_broker: Any, short_worker_calls: float
) -> None:
    # Given held messages, and Pub/Sub answering UNAVAILABLE
    broker = fake_broker(ack_deadline=30)
    subscription = broker.subscription_path("q")
    broker.leases.hold(subscription, ["m1", "m2"])
    fake.fail("ModifyAckDeadline", grpc.StatusCode.UNAVAILABLE)

    # When the lease thread extends them
    started = time.monotonic()
    broker.leases.extend()  # raises nothing: the thread goes on
    elapsed = time.monotonic() - started

    # Then one bounded call, and the messages still held, to be extended at the next look
    assert len(fake.requests("ModifyAckDeadline")) == 1
    assert elapsed < short_worker_calls + 1.0
    assert broker.leases.count(subscription) == 2

    # And once Pub/Sub answers, they are extended by the ack deadline
    fake.succeed("ModifyAckDeadline")
    broker.leases.extend()
    [*_, last] = fake.requests("ModifyAckDeadline")
    assert sorted(last.ack_ids) == ["m1", "m2"] and last.ack_deadline_seconds == 30


def test_a_delay_consumer_that_closes_during_an_outage_ends_its_leases_quietly(
    fake: FakePubSub, fake_broker: Any, short_worker_calls: float
) -> None:
    # Given delayed messages held by a delay consumer, and Pub/Sub answering UNAVAILABLE
    broker = fake_broker()
    consumer = broker.consume("q.DQ", prefetch=10, timeout=500)
    broker.leases.hold(consumer.subscription, ["d1", "d2"])
    fake.fail("ModifyAckDeadline", grpc.StatusCode.UNAVAILABLE)

    # When Dramatiq closes it, Then nothing raises (Dramatiq's consumer thread would die for good)
    consumer.close()

    assert broker.leases.count(consumer.subscription) == 0  # their deadline runs out: delivered again
    [give_back] = fake.requests("ModifyAckDeadline")
    assert sorted(give_back.ack_ids) == ["d1", "d2"] and give_back.ack_deadline_seconds == 0


def test_a_message_held_longer_than_max_lease_is_no_longer_extended(
    fake: FakePubSub, fake_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a message held longer than max_lease, and one just pulled
    broker = fake_broker(ack_deadline=30, max_lease=0.3)
    subscription = broker.subscription_path("q")
    broker.leases.hold(subscription, ["old"])
    time.sleep(0.4)
    broker.leases.hold(subscription, ["new"])

    # When the lease thread looks at them
    broker.leases.extend()

    # Then only the new one is extended; the old one is let go, and that is logged
    assert [list(r.ack_ids) for r in fake.requests("ModifyAckDeadline")] == [["new"]]
    assert broker.leases.count(subscription) == 1
    assert "longer than max_lease" in caplog.text


def test_a_delayed_message_is_extended_until_it_is_due() -> None:
    broker = PubSubBroker(project_id=PROJECT_ID, middleware=[], max_lease=60)
    broker.leases._run = lambda: None  # type: ignore[method-assign]  # no server: no lease thread
    broker.leases.hold("s", ["delayed"])

    broker.leases.hold_longer("s", "delayed", 3600)

    lease = broker.leases._held["s"]["delayed"]
    assert lease.until - time.monotonic() > 3600 + 59


def test_a_lease_is_extended_only_when_its_deadline_comes_near(fake: FakePubSub, fake_broker: Any) -> None:
    # Given a held message on a subscription with a 600 s deadline
    broker = fake_broker(ack_deadline=600)
    broker.leases.hold(broker.subscription_path("q"), ["m1"])

    # When the lease thread looks twice
    broker.leases.extend()  # its deadline, unknown, is taken to be Pub/Sub's shortest: extended
    broker.leases.extend()  # 600 s left: nothing to do

    # Then one call
    assert len(fake.requests("ModifyAckDeadline")) == 1


def test_a_nack_pubsub_refuses_for_good_gives_the_message_back_instead_of_pinning_a_thread(
    fake: FakePubSub, fake_broker: Any, short_worker_calls: float, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker account that may not publish to the dead letters
    broker = fake_broker()
    consumer = broker.consume("q", prefetch=1, timeout=500)
    failed = pubsub_message("n1")
    broker.leases.hold(consumer.subscription, ["n1"])
    fake.fail("Publish", grpc.StatusCode.PERMISSION_DENIED, when=lambda r: r.topic.endswith(".XQ"))

    # When Dramatiq nacks the message, Then no ConnectionClosed (Dramatiq would try every 5 s for ever)
    consumer.nack(failed)

    # And the message goes back to Pub/Sub (its dead-letter policy takes it), unacknowledged, logged
    [give_back] = fake.requests("ModifyAckDeadline")
    assert list(give_back.ack_ids) == ["n1"] and give_back.ack_deadline_seconds == 0
    assert fake.requests("Acknowledge") == []
    assert broker.leases.count(consumer.subscription) == 0
    assert "refused a dead letter" in caplog.text


def test_a_nack_during_an_outage_is_tried_again_and_dead_letters_once(
    fake: FakePubSub, fake_broker: Any, short_worker_calls: float
) -> None:
    broker = fake_broker()
    consumer = broker.consume("q", prefetch=1, timeout=500)
    failed = pubsub_message("n1")

    # Given Pub/Sub unreachable: the nack raises Dramatiq's ConnectionClosed (it tries again)
    fake.fail("Publish", grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(ConnectionClosed):
        consumer.nack(failed)

    refused = len(fake.requests("Publish"))

    # When the dead letter is published but its acknowledgement fails
    fake.succeed("Publish")
    fake.fail("Acknowledge", grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(ConnectionClosed):
        consumer.nack(failed)

    # Then the next try only acknowledges: one dead letter, not two
    fake.succeed("Acknowledge")
    consumer.nack(failed)
    dead = [r for r in fake.requests("Publish")[refused:] if r.topic.endswith(".XQ")]
    assert len(dead) == 1
    assert len(fake.requests("Acknowledge")) == 2


def test_a_send_retries_unavailable_and_stays_within_publish_timeout(
    fake: FakePubSub, fake_broker: Any
) -> None:
    # Given a server that answers UNAVAILABLE after 0.3 s for 0.6 s, then goes silent
    broker = fake_broker(publish_timeout=1.0)
    broker.ensure("q")
    first: list[float] = []

    def flaky(request: Any, context: grpc.ServicerContext) -> Any:
        first.append(time.monotonic())
        if time.monotonic() - first[0] < 0.6:
            time.sleep(0.3)
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted UNAVAILABLE")
        fake.hang(context)

    fake.answer("Publish", flaky)

    # When a message is sent
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        publish(broker, message())
    elapsed = time.monotonic() - started

    # Then it was tried again, and the whole send stayed within PUBLISH_TIMEOUT (api-core's retry
    # would give the last attempt a whole second again: about 1.75 s)
    assert len(fake.requests("Publish")) >= 3
    assert elapsed < 1.0 + 0.25, f"refused after {elapsed:.2f}s"


def test_a_send_that_meets_unavailable_a_few_times_gets_through(fake: FakePubSub, fake_broker: Any) -> None:
    broker = fake_broker(publish_timeout=2.0)
    broker.ensure("q")
    refusals = iter(range(3))

    def recovering(request: Any, context: grpc.ServicerContext) -> Any:
        if next(refusals, None) is not None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted UNAVAILABLE")
        return types.PublishResponse(message_ids=["42"])

    fake.answer("Publish", recovering)

    assert broker.publish_data("q", b"body") == "42"
    assert len(fake.requests("Publish")) == 4


def test_an_account_that_may_publish_but_not_create_still_sends(
    fake: FakePubSub, fake_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a least-privilege web account: creating topics and subscriptions is denied
    broker = fake_broker()
    broker.declare_queue("other")
    fake.fail("CreateTopic", grpc.StatusCode.PERMISSION_DENIED)
    fake.fail("CreateSubscription", grpc.StatusCode.PERMISSION_DENIED)

    # When it sends to two queues, Then both sends go (the publish tells whether the topic exists)
    publish(broker, message())
    publish(broker, message("other"))

    assert [r.topic for r in fake.requests("Publish")] == [broker.topic_path("q"), broker.topic_path("other")]
    assert caplog.text.count("may not create") == 1  # once, naming the fix
    assert "create=False" in caplog.text


def test_subscriptions_never_expire_and_dead_letters_are_kept_31_days(
    fake: FakePubSub, fake_broker: Any
) -> None:
    broker = fake_broker()

    broker.ensure("q")

    made = {r.name.rsplit("/", 1)[1]: r for r in fake.requests("CreateSubscription")}
    assert set(made) == {"fake.q", "fake.q.DQ", "fake.q.XQ"}
    for subscription in made.values():
        # set, without a TTL: Pub/Sub's "never expires" (31 days without a pull otherwise)
        assert "expiration_policy" in subscription and "ttl" not in subscription.expiration_policy
    assert made["fake.q.XQ"].message_retention_duration.total_seconds() == 31 * 24 * 3600


def test_a_pubsub_that_refuses_31_days_of_retention_gets_the_dead_letters_with_its_default(
    fake: FakePubSub, fake_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a Pub/Sub whose retention bound is still 7 days (as Google's emulator)
    def seven_days_at_most(request: Any, context: grpc.ServicerContext) -> Any:
        if request.message_retention_duration.total_seconds() > 7 * 24 * 3600:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message_retention_duration out of bounds")
        return request

    fake.answer("CreateSubscription", seven_days_at_most)
    broker = fake_broker()

    broker.ensure("q")

    # Then the dead letters' subscription is made all the same, never expiring, and that is said
    made = [r for r in fake.requests("CreateSubscription") if r.name.endswith(".XQ")]
    assert [r.message_retention_duration.total_seconds() for r in made] == [31 * 24 * 3600, 0]
    assert "expiration_policy" in made[-1]
    assert "refused a retention of 31 days" in caplog.text


def test_with_create_false_a_missing_subscription_fails_the_send(
    fake: FakePubSub, fake_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given create=False, and no dead-letter subscription
    broker = fake_broker(create=False)
    missing = broker.subscription_path("q.XQ")
    fake.fail("GetSubscription", grpc.StatusCode.NOT_FOUND, when=lambda r: r.subscription == missing)

    # When a message is sent, Then a 503 rather than a message that would go nowhere, and a log
    # line that names what is missing
    with pytest.raises(BrokerUnavailable):
        publish(broker, message())
    assert fake.requests("Publish") == []
    assert fake.requests("CreateSubscription") == []
    assert missing in caplog.text

    # And once it exists the next send checks again and goes, and later ones check no more
    fake.succeed("GetSubscription")
    publish(broker, message())
    publish(broker, message())
    assert len(fake.requests("Publish")) == 2
    assert len(fake.requests("GetSubscription")) == 1 + 3


def test_with_create_false_an_account_that_may_not_read_subscriptions_sends_with_a_warning(
    fake: FakePubSub, fake_broker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = fake_broker(create=False)
    fake.fail("GetSubscription", grpc.StatusCode.PERMISSION_DENIED)

    publish(broker, message())

    assert len(fake.requests("Publish")) == 1
    assert "cannot check" in caplog.text


@pytest.mark.parametrize("project_id", ["my-project", "example.com:my-project", "google.com:proj-123"])
def test_project_ids_google_cloud_takes_domain_scoped_included(project_id: str) -> None:
    broker = PubSubBroker(project_id=project_id, middleware=[])

    assert broker.topic_path("queue") == f"projects/{project_id}/topics/queue"


@pytest.mark.parametrize("project_id", ["My-Project", "abc", "example.com:", ":my-project", "1project"])
def test_project_ids_google_cloud_refuses(project_id: str) -> None:
    with pytest.raises(ValueError, match="project_id"):
        PubSubBroker(project_id=project_id, middleware=[]).topic_path("queue")
