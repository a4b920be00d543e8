"""Quorum queues on a 3-node RabbitMQ cluster: a node stopped under load loses no accepted message.

The cluster is started once for this module by :class:`~tests.integration.cluster.RabbitCluster`
(its own nodes, ports, data and epmd on loopback; the machine's RabbitMQ on 5672 is not used
nor touched). The web (gunicorn) and the worker (``rundramatiq``) get a broker URL listing
the three nodes, node 0 first, and ``queue_type = "quorum"``.

Run this group alone with ``pytest -m cluster``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
import requests
from django.test import override_settings
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.errors import ConnectionClosed

from django_messenger.brokers.rabbitmq import use_queue_types
from django_messenger.exceptions import BrokerUnavailable
from django_messenger.publishing import ConfirmingPublisher
from django_messenger.transports.dramatiq.binding import binding
from tests.testapp.messages import Ping
from tests.testapp.models import Effect

from .cluster import RabbitCluster, rabbitmq_script
from .processes import Process, start_server, start_worker, wait_for
from .rabbit import envelope_message

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

#: Requests a second, posted at a steady pace by a pool of client threads.
RATE = 20
#: Seconds of posting before the node is stopped, and after it stopped.
BEFORE_STOP, AFTER_STOP = 6.0, 14.0
#: Seconds after the node's stop returned by which the web must answer 202 again.
RECONNECT_MARGIN = 8.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[RabbitCluster]:
    """Three RabbitMQ nodes joined into a cluster, for this module; stopped (and their data gone) after."""
    if rabbitmq_script("rabbitmq-server") is None or rabbitmq_script("rabbitmqctl") is None:
        if os.environ.get("CI"):
            pytest.fail("rabbitmq-server is not installed: CI must have it for the cluster test.")
        pytest.skip("rabbitmq-server is not installed.")
    running = RabbitCluster(tmp_path_factory.mktemp("rabbit-cluster"))
    try:
        running.start(log_dir)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def cluster_env(cluster: RabbitCluster, django_db_setup: Any, django_db_blocker: Any) -> dict[str, str]:
    """The processes' environment: the cluster's nodes in the URL (node 0 first), quorum queues."""
    from django.db import connection

    return {
        "DJANGO_SETTINGS_MODULE": "tests.integration.settings",
        "MESSENGER_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "MESSENGER_QUEUE": f"messenger-cluster-{uuid.uuid4().hex[:12]}",
        "MESSENGER_QUEUE_TYPE": "quorum",
        "MESSENGER_BROKER_URL": ";".join(node.url for node in cluster.nodes),
        "MESSENGER_PUBLISH_TIMEOUT": "5",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


@pytest.fixture(scope="module")
def cluster_worker(cluster_env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    """A ``rundramatiq`` worker on the cluster's queue (connected to node 0, the first URL)."""
    process = start_worker(cluster_env, log_dir, queues=[cluster_env["MESSENGER_QUEUE"]])
    yield process
    process.stop()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


@dataclass
class Answer:
    text: str
    sent_at: float
    status: int
    message_id: str | None


def post_at_steady_rate(url: str, stop: threading.Event, answers: list[Answer]) -> None:
    """POST a new ping every 1/RATE s until ``stop`` is set (a pool, so a slow answer delays no other)."""
    lock = threading.Lock()
    session_of = threading.local()

    def post(n: int, sent_at: float) -> None:
        session = getattr(session_of, "session", None) or requests.Session()
        session_of.session = session
        text = f"cluster-{n}"
        try:
            response = session.post(f"{url}/pings/", json={"text": text}, timeout=30)
            answer = Answer(text, sent_at, response.status_code, response.headers.get("Messenger-Message-Id"))
        except requests.RequestException:
            answer = Answer(text, sent_at, 0, None)
        with lock:
            answers.append(answer)

    with ThreadPoolExecutor(max_workers=16) as pool:
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            pool.submit(post, n, time.monotonic())
            n += 1
            time.sleep(max(0.0, start + n / RATE - time.monotonic()))


def test_queues_delay_and_dead_letter_queues_are_quorum_queues(cluster, cluster_env, cluster_worker):
    # Given a worker on the cluster with queue_type "quorum" (it declared its queues)
    queue = cluster_env["MESSENGER_QUEUE"]

    # Then its queue, delay queue and dead-letter queue are quorum queues, on the three nodes
    queues = cluster.queues(cluster.nodes[1])
    assert {name: queues.get(name) for name in (queue, f"{queue}.DQ", f"{queue}.XQ")} == {
        queue: ("quorum", 3),
        f"{queue}.DQ": ("quorum", 3),
        f"{queue}.XQ": ("quorum", 3),
    }


def test_a_handler_s_own_queue_and_the_fan_out_queue_are_quorum_too(cluster):
    # Given the transport "async" with quorum queues, a handler with its own queue_name ("other",
    # tests.testapp.handlers.handle_everything) and a queue of another transport
    messenger = {
        "TRANSPORTS": {
            "async": {"queue_name": f"cluster-fanout-{uuid.uuid4().hex[:8]}", "queue_type": "quorum"},
            "bulk": {"queue_name": f"cluster-bulk-{uuid.uuid4().hex[:8]}"},
        }
    }
    with override_settings(MESSENGER=messenger):
        broker = RabbitmqBroker(url=cluster.nodes[1].url, confirm_delivery=True, middleware=[])
        use_queue_types(broker, binding.queue_type)
        try:
            fanout = binding.transport_queue("async")  # the queue of async's fan-out actor
            bulk = binding.transport_queue("bulk")
            # When the worker side (Dramatiq's own declarations) declares them
            for name in (fanout, "other", bulk):
                broker.declare_queue(name, ensure=True)
        finally:
            broker.close()

    # Then the quorum transport's queues are quorum queues, the other transport's stay classic
    queues = cluster.queues(cluster.nodes[2])
    for name in (fanout, "other"):
        assert [queues.get(q) for q in (name, f"{name}.DQ", f"{name}.XQ")] == [("quorum", 3)] * 3
    assert queues[bulk] == ("classic", 0)


def test_a_classic_queue_redeclared_as_quorum_is_a_clear_error(cluster, caplog):
    # Given a queue that exists as a classic queue (declared by Dramatiq with classic queues)
    name = f"cluster-classic-{uuid.uuid4().hex[:8]}"
    classic = RabbitmqBroker(url=cluster.nodes[0].url, confirm_delivery=True, middleware=[])
    try:
        classic.declare_queue(name, ensure=True)
    finally:
        classic.close()

    # When the transport asks for quorum queues
    broker = RabbitmqBroker(url=cluster.nodes[0].url, confirm_delivery=True, middleware=[])
    use_queue_types(broker, lambda queue: "quorum")
    try:
        # Then a worker's declaration fails with a sentence that says what to do
        with pytest.raises(ConnectionClosed) as worker_error:
            broker.declare_queue(name, ensure=True)
        # And so does a web send (a 503, the reason logged)
        _, message = envelope_message(name, "tests.testapp.handlers.handle", Ping(text="never sent"))
        broker.queues_pending.add(name)
        with pytest.raises(BrokerUnavailable) as web_error:
            ConfirmingPublisher(broker, timeout=5).publish(message)
    finally:
        broker.close()
    for error in (str(worker_error.value), str(web_error.value)):
        assert f"{name!r}" in error
        assert "already exists as a classic queue" in error
        assert "Moving to quorum queues" in error
    assert "already exists as a classic queue" in caplog.text


class NackingChannel:
    """A channel whose next publish goes through and is then nacked, as a stuck channel of RabbitMQ
    3.10 does after a quorum queue's leader moved (see django_messenger/publishing/rabbitmq.py)."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)

    def basic_publish(self, *args: Any, **kwargs: Any) -> None:
        self._channel.basic_publish(*args, **kwargs)
        raise pika.exceptions.NackError([])


def test_a_nacked_publish_is_sent_again_on_a_new_connection(cluster, monkeypatch):
    queue = f"cluster-nack-{uuid.uuid4().hex[:8]}"
    broker = RabbitmqBroker(
        url=[node.url for node in cluster.nodes[1:]], confirm_delivery=True, middleware=[]
    )
    use_queue_types(broker, lambda name: "quorum")
    publisher = ConfirmingPublisher(broker, timeout=5)
    # Given a publisher whose first connection's channel nacks what it publishes
    connect = publisher._connect
    sessions = []

    def connect_then_nack(deadline: float) -> Any:
        session = connect(deadline)
        if not sessions:
            session.channel = NackingChannel(session.channel)
        sessions.append(session)
        return session

    monkeypatch.setattr(publisher, "_connect", connect_then_nack)
    try:
        # When a message is published
        _, message = envelope_message(queue, "tests.testapp.handlers.handle", Ping(text="nacked once"))
        publisher.publish(message)
    finally:
        publisher.close()
        broker.close()

    # Then it was published again on a second connection, and that one was confirmed
    assert len(sessions) == 2
    assert not sessions[0].connection.is_open
    assert message.message_id in queued_ids(cluster, queue)


def test_a_full_quorum_queue_fails_a_publish_after_a_second_nack(cluster):
    queue = f"cluster-full-{uuid.uuid4().hex[:8]}"
    # Given a quorum queue that holds one message at most (a max-length policy; it rejects publishes
    # once over it: a quorum queue may take one more before it notices, so it is filled first)
    cluster.rabbitmqctl(cluster.nodes[1], "set_policy", f"{queue}-full", f"^{queue}$", '{"max-length": 1}')
    broker = RabbitmqBroker(url=cluster.nodes[1].url, confirm_delivery=True, middleware=[])
    use_queue_types(broker, lambda name: "quorum")
    publisher = ConfirmingPublisher(broker, timeout=5)
    sent, failures = 0, []
    try:
        # When messages are published to it
        while sent < 5 and not failures:
            _, message = envelope_message(queue, "tests.testapp.handlers.handle", Ping(text=f"full {sent}"))
            started = time.monotonic()
            try:
                publisher.publish(message)
                sent += 1
            except BrokerUnavailable as exc:
                failures.append((exc, time.monotonic() - started))
    finally:
        publisher.close()
        broker.close()
        cluster.rabbitmqctl(cluster.nodes[1], "clear_policy", f"{queue}-full")
    # Then one fails, within the publish timeout, saying why (nacked on two connections)
    assert failures, f"{sent} messages were all confirmed by a queue of max-length 1"
    error, took = failures[0]
    assert "basic.nack" in str(error)
    assert "twice" in str(error)
    assert took < 5 + 2


def queued_ids(cluster: RabbitCluster, queue: str) -> list[str]:
    """The Dramatiq message ids on ``queue`` (taken off it)."""
    connection = pika.BlockingConnection(pika.URLParameters(cluster.nodes[1].url))
    try:
        channel = connection.channel()
        ids = []
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return ids
            ids.append(Message.decode(body).message_id)
    finally:
        connection.close()


def test_a_node_stop_loses_no_accepted_message(
    cluster, cluster_env, cluster_worker, log_dir, processes, capsys
):
    first = cluster.nodes[0]
    # Given a web server and a worker connected to node 0 (the first URL), quorum queues
    worker_connections = wait_for(lambda: len(connections(cluster, first)), what="the worker on node 0")
    server, url = start_server(cluster_env, log_dir, wsgi="tests.integration.wsgi:application", threads=8)
    processes.append(server)
    assert requests.post(f"{url}/pings/", json={"text": "warm-up"}, timeout=30).status_code == 202
    assert len(connections(cluster, first)) > worker_connections, "the web's publisher is not on node 0"

    # When clients post at a steady rate, and node 0 is stopped under them
    answers: list[Answer] = []
    stop = threading.Event()
    poster = threading.Thread(target=post_at_steady_rate, args=(url, stop, answers))
    poster.start()
    time.sleep(BEFORE_STOP)
    stop_started = time.monotonic()
    cluster.stop_node(first)
    stop_ended = time.monotonic()
    time.sleep(AFTER_STOP)
    stop.set()
    poster.join(120)

    # Then every 202's message is handled, exactly as posted: none lost
    accepted = {a.message_id: a.text for a in answers if a.status == 202}
    wait_for(
        lambda: handled_ids(accepted) >= set(accepted), timeout=120, interval=0.5, what="every 202 handled"
    )
    effects = list(Effect.objects.filter(handler="ping", payload__text__startswith="cluster-"))
    texts = {str(e.message_id): e.payload["text"] for e in effects}
    lost = set(accepted) - set(texts)
    statuses = sorted({a.status for a in answers})
    refused = [a for a in answers if a.status != 202]
    late = [a for a in refused if a.sent_at > stop_ended + RECONNECT_MARGIN]
    before = [a for a in answers if a.sent_at < stop_started]
    after = [a for a in answers if a.sent_at > stop_ended + RECONNECT_MARGIN]
    with capsys.disabled():
        print(
            f"\n[cluster test] posted={len(answers)} accepted (202)={len(accepted)} lost={len(lost)} "
            f"handled rows={len(effects)} (duplicates {len(effects) - len(texts)}) statuses={statuses} "
            f"refused={len(refused)} within {stop_ended - stop_started:.1f}s stop "
            f"+ {RECONNECT_MARGIN}s; 202 after it={sum(a.status == 202 for a in after)}"
        )
    assert lost == set()
    assert all(texts[message_id] == text for message_id, text in accepted.items())
    posted = {a.text for a in answers} | {"warm-up"}
    assert set(texts.values()) <= posted  # nothing handled that was not posted
    # And the web answered 503 (never another error, never a hang) only around the node's stop
    assert set(statuses) <= {202, 503}
    assert all(a.status == 202 for a in before)
    assert late == []
    # And answers 202 again once it reconnected to a surviving node
    assert len(after) >= RATE * (AFTER_STOP - RECONNECT_MARGIN) * 0.5
    assert all(a.status == 202 for a in after)
    assert len(cluster.running_nodes(cluster.nodes[1])) == 2


def handled_ids(accepted: dict[str | None, str]) -> set[str | None]:
    ids = Effect.objects.filter(handler="ping", message_id__in=[i for i in accepted if i]).values_list(
        "message_id", flat=True
    )
    return {str(i) for i in ids}


def connections(cluster: RabbitCluster, node: Any) -> list[str]:
    output = cluster.rabbitmqctl(node, "list_connections", "peer_port", "--silent", "--no-table-headers")
    return [line for line in output.splitlines() if line.strip()]
