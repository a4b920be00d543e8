"""The benchmarks' broker registry (benchmarks/brokers.py): no server needed.

What every entry must give the benchmark processes, so that a new broker is one entry.
"""

from __future__ import annotations

import importlib

import pytest
from dramatiq import Broker
from dramatiq.middleware import Retries

from benchmarks.brokers import BROKERS, DEFAULT, Kafka, Postgres, PubSub, Rabbitmq, Redis, Sqs, selected


@pytest.mark.parametrize("name", list(BROKERS))
def test_each_entry_describes_a_dramatiq_broker_of_the_run(name):
    # Given an entry of the registry
    entry = BROKERS[name]
    assert entry.name == name and entry.server
    assert True in entry.confirm_modes

    # When the processes of a run ask for their DRAMATIQ_BROKER
    config = entry.dramatiq_broker("bench-0123abcd", True)

    # Then it names an importable Dramatiq broker class, with options that build it
    module_name, _, class_name = config["BROKER"].rpartition(".")
    broker_class = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(broker_class, Broker)
    broker = entry.build("bench-0123abcd", True, middleware=[Retries()])
    assert isinstance(broker, broker_class)
    assert [type(m) for m in broker.middleware] == [Retries]
    broker.close()


def test_rabbitmq_has_both_confirm_modes_and_redis_one():
    assert Rabbitmq.dramatiq_broker("p", False)["OPTIONS"]["confirm_delivery"] is False
    assert Rabbitmq.confirm_modes == (True, False)
    assert Redis.confirm_modes == (True,) and "redis" in Redis.no_unconfirmed_note


def test_redis_keeps_a_run_under_its_own_namespace_with_bounded_sockets(monkeypatch):
    monkeypatch.setenv("BENCH_REDIS_URL", "redis://127.0.0.1:6390/2")
    options = Redis.dramatiq_broker("bench-0123abcd", True)["OPTIONS"]

    assert options["namespace"] == "bench-0123abcd"
    assert options["url"].startswith("redis://127.0.0.1:6390/2?")
    assert "socket_timeout=" in options["url"] and "socket_connect_timeout=" in options["url"]
    assert Redis.env() == {"BENCH_REDIS_URL": "redis://127.0.0.1:6390/2"}


def test_the_processes_pick_their_entry_by_bench_broker(monkeypatch):
    monkeypatch.delenv("BENCH_BROKER", raising=False)
    assert selected() is BROKERS[DEFAULT] is Rabbitmq
    monkeypatch.setenv("BENCH_BROKER", "redis")
    assert selected() is Redis
    monkeypatch.setenv("BENCH_BROKER", "carrier-pigeon")
    with pytest.raises(SystemExit, match="carrier-pigeon"):
        selected()


def test_sqs_keeps_a_run_under_its_own_namespace_on_its_endpoint(monkeypatch):
    monkeypatch.setenv("BENCH_SQS_URL", "http://127.0.0.1:5999")
    config = Sqs.dramatiq_broker("bench-0123abcd", True)

    assert config["BROKER"] == "django_messenger.brokers.sqs.SQSBroker"
    assert config["OPTIONS"]["namespace"] == "bench-0123abcd"
    assert config["OPTIONS"]["endpoint_url"] == "http://127.0.0.1:5999"
    assert Sqs.env()["BENCH_SQS_URL"] == "http://127.0.0.1:5999"
    assert Sqs.confirm_modes == (True,) and "sqs" in Sqs.no_unconfirmed_note
    assert Sqs.databases() is None


def test_postgres_keeps_a_run_in_a_schema_of_its_own_in_the_projects_database(monkeypatch):
    monkeypatch.setenv("BENCH_PG_PORT", "5999")
    monkeypatch.setenv("BENCH_PG_DB", "benchdb")
    config = Postgres.dramatiq_broker("bench-0123abcd", True)

    assert config["BROKER"] == "django_messenger.brokers.postgres.PostgresBroker"
    assert config["OPTIONS"]["schema"] == "bench_0123abcd"
    assert config["OPTIONS"]["url"].startswith("postgresql://postgres@127.0.0.1:5999/benchdb?")
    # messenger's broker enqueues on Django's connection: the project's database is the queue table's
    database = Postgres.databases()["default"]
    assert (database["ENGINE"], database["PORT"], database["NAME"]) == (
        "django.db.backends.postgresql",
        "5999",
        "benchdb",
    )
    assert Postgres.confirm_modes == (True,)


def test_kafka_keeps_a_run_under_its_own_topics_and_groups(monkeypatch):
    monkeypatch.setenv("BENCH_KAFKA_BOOTSTRAP", "127.0.0.1:9999")
    config = Kafka.dramatiq_broker("bench-0123abcd", True)

    assert config["BROKER"] == "django_messenger.brokers.kafka.KafkaBroker"
    assert config["OPTIONS"]["bootstrap_servers"] == "127.0.0.1:9999"
    broker = Kafka.build("bench-0123abcd", True, middleware=[])
    assert broker.topic("q") == "bench-0123abcd.q"  # type: ignore[attr-defined]
    assert broker.consumer_group("q").startswith("bench-0123abcd.")  # type: ignore[attr-defined]
    assert Kafka.env()["BENCH_KAFKA_BOOTSTRAP"] == "127.0.0.1:9999"
    assert Kafka.confirm_modes == (True,) and "kafka" in Kafka.no_unconfirmed_note


def test_pubsub_keeps_a_run_under_its_own_namespace_on_its_emulator(monkeypatch):
    monkeypatch.setenv("BENCH_PUBSUB_HOST", "127.0.0.1:8999")
    config = PubSub.dramatiq_broker("bench-0123abcd", True)

    assert config["BROKER"] == "django_messenger.brokers.pubsub.PubSubBroker"
    assert config["OPTIONS"]["namespace"] == "bench-0123abcd"
    assert config["OPTIONS"]["min_backoff"] == 0  # a peeked message comes back at once
    assert PubSub.env() == {"BENCH_PUBSUB_HOST": "127.0.0.1:8999", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8999"}
    assert PubSub.confirm_modes == (True,) and "pubsub" in PubSub.no_unconfirmed_note
    assert PubSub.databases() is None
