"""E013 / W010: a PostgreSQL broker that cannot write on its database, or whose sends are not bounded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.apps import apps
from django.core import checks
from django.db import connections
from dramatiq_postgres import PostgresBroker as UpstreamPostgresBroker

from django_messenger import checks as messenger_checks
from django_messenger.brokers.postgres import PostgresBroker
from django_messenger.checks import check_broker, postgres_connect_bound
from django_messenger.transports.dramatiq.binding import binding

URL = "postgresql://postgres@127.0.0.1:5432/unused"


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any], Any]]:
    """Bind messenger to a broker of the test (never connected: its pool opens connections on demand)."""
    made: list[Any] = []

    def bind(broker: Any) -> Any:
        made.append(broker)
        monkeypatch.setattr(binding, "_broker", broker)
        return broker

    yield bind
    for broker in made:
        broker.close()


@pytest.fixture
def connect_timeout(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    def set_to(value: Any) -> None:
        monkeypatch.setitem(connections.settings["default"]["OPTIONS"], "connect_timeout", value)

    return set_to


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id for message in messages if message.id]


def test_a_connect_timeout_within_publish_timeout_is_quiet(bound, connect_timeout, settings):
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 5.0}
    connect_timeout(3)
    bound(PostgresBroker(url=URL, middleware=[]))

    assert check_broker() == []


def test_no_connect_timeout_is_w010(bound, settings):
    # Given the unit tests' database, which sets no connect_timeout: psycopg waits up to 130 s
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 5.0}
    bound(PostgresBroker(url=URL, middleware=[]))

    [warning] = check_broker()

    assert warning.id == "django_messenger.W010"
    assert "130 s" in warning.msg and "connect_timeout" in (warning.hint or "")


@pytest.mark.parametrize(("value", "seconds"), [(10, 10.0), ("1", 2.0), (0, 130.0), ("nonsense", 130.0)])
def test_psycopg_reads_connect_timeout_as_whole_seconds_of_two_at_least(connect_timeout, value, seconds):
    connect_timeout(value)

    assert postgres_connect_bound("default") == seconds


def test_a_connect_timeout_longer_than_publish_timeout_is_w010(bound, connect_timeout, settings):
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 1.5}
    connect_timeout(2)  # psycopg's least: a PUBLISH_TIMEOUT under 2 s cannot bound a connect
    bound(PostgresBroker(url=URL, middleware=[]))

    assert ids(check_broker()) == ["django_messenger.W010"]


def test_dramatiq_postgres_own_broker_is_w010(bound, connect_timeout):
    connect_timeout(2)
    bound(UpstreamPostgresBroker(url=URL, results=False, middleware=[]))

    [warning] = check_broker()

    assert warning.id == "django_messenger.W010"
    assert "10 times" in warning.msg and "django_messenger.brokers.postgres.PostgresBroker" in (
        warning.hint or ""
    )


def test_a_database_alias_that_does_not_exist_is_e013(bound):
    bound(PostgresBroker(url=URL, database="queues", middleware=[]))

    [error] = check_broker()

    assert error.id == "django_messenger.E013" and "'queues'" in error.msg


def test_a_database_that_is_not_postgresql_is_e013(bound, monkeypatch):
    # Given an SQLite alias beside the PostgreSQL one
    monkeypatch.setitem(
        connections.settings,
        "lite",
        {**connections.settings["default"], "ENGINE": "django.db.backends.sqlite3"},
    )
    try:
        bound(PostgresBroker(url=URL, database="lite", middleware=[]))

        [error] = check_broker()
    finally:
        del connections["lite"]

    assert error.id == "django_messenger.E013" and "sqlite3" in error.msg


def test_dramatiq_postgres_django_app_installed_is_e013(bound, connect_timeout, monkeypatch):
    connect_timeout(2)
    bound(PostgresBroker(url=URL, middleware=[]))
    installed = apps.is_installed
    monkeypatch.setattr(
        messenger_checks.apps,
        "is_installed",
        lambda name: name == "dramatiq_postgres.django" or installed(name),
    )

    [error] = check_broker()

    assert error.id == "django_messenger.E013" and "dramatiq_postgres.django" in error.msg
