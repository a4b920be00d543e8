"""E012 / W009: delays and retries over SQS's 15 minutes, and messages larger than SQS takes.

The brokers are built here without touching the network (dramatiq-sqs declares queues lazily).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from dramatiq.middleware import Retries, TimeLimit
from dramatiq_sqs import SQSBroker as UpstreamSQSBroker

from django_messenger.brokers.sqs import SQSBroker, largest_envelope
from django_messenger.checks import check_sqs
from django_messenger.locator import locator
from django_messenger.transports.dramatiq.binding import binding

AWS = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
FITS = largest_envelope(1024 * 1024)  # a MAX_MESSAGE_SIZE that the default max_message_size takes


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Any:
    """Make the binding's broker an SQS broker (messenger's, or dramatiq-sqs's own) holding the
    app's actors, with MAX_MESSAGE_SIZE within what it takes unless a test says otherwise."""
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": FITS}

    def use(cls: type = SQSBroker, **options: Any) -> Any:
        broker = cls(middleware=[TimeLimit(), Retries()], endpoint_url="http://127.0.0.1:9", **AWS, **options)
        broker.actors = dict(binding.broker.actors)
        monkeypatch.setattr(binding, "_broker", broker)
        return broker

    return use


def ids(found: list[checks.CheckMessage]) -> list[str]:
    return [message.id or "" for message in found]


def test_defaults_within_sqs_limits_pass(sqs: Any) -> None:
    # Given messenger's defaults: a 600 s hop, max_backoff 300 s
    sqs()

    assert check_sqs() == []


def test_no_sqs_check_on_other_brokers(settings: Any) -> None:
    # The StubBroker of the tests: a hop and a size SQS would refuse mean nothing there
    settings.MESSENGER = {**settings.MESSENGER, "DELAY_HOP": 3600, "MAX_MESSAGE_SIZE": 0}

    assert check_sqs() == []


@pytest.mark.parametrize("cls", [SQSBroker, UpstreamSQSBroker])
def test_e012_a_delay_hop_over_900_seconds(sqs: Any, settings: Any, cls: type) -> None:
    sqs(cls)
    settings.MESSENGER = {**settings.MESSENGER, "DELAY_HOP": 900.5}

    [error] = check_sqs()

    assert error.id == "django_messenger.E012"
    assert error.level == checks.ERROR
    assert "DELAY_HOP" in error.msg and "900" in (error.hint or "")


def test_a_delay_hop_of_900_seconds_passes(sqs: Any, settings: Any) -> None:
    sqs()
    settings.MESSENGER = {**settings.MESSENGER, "DELAY_HOP": 900}

    assert check_sqs() == []


def test_e012_a_handler_whose_max_backoff_is_over_900_seconds(
    sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = sqs()
    [flaky] = [h for h in locator.handlers if h.fn.__qualname__ == "flaky"]
    actor = broker.actors[flaky.actor_name]
    monkeypatch.setitem(actor.options, "max_backoff", 900_001)

    [error] = check_sqs()

    assert error.id == "django_messenger.E012"
    assert error.obj == "tests.testapp.handlers.flaky"
    assert "max_backoff=900001" in error.msg and "900000" in (error.hint or "")


def test_e012_the_retries_middleware_default_counts_for_an_actor_without_max_backoff(
    sqs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = sqs()
    [flaky] = [h for h in locator.handlers if h.fn.__qualname__ == "flaky"]
    actor = broker.actors[flaky.actor_name]
    monkeypatch.delitem(actor.options, "max_backoff")
    # Dramatiq's own default max_backoff is 7 days

    assert ids(check_sqs()) == ["django_messenger.E012"]


def test_w009_a_max_message_size_sqs_cannot_take(sqs: Any, settings: Any) -> None:
    # Given messenger's default MAX_MESSAGE_SIZE (1 MiB): 1.33 MiB and more once base64
    sqs()
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 1024 * 1024}

    [warning] = check_sqs()

    assert warning.id == "django_messenger.W009"
    assert warning.level == checks.WARNING
    assert str(FITS) in (warning.hint or "")


def test_w009_no_limit_at_all(sqs: Any, settings: Any) -> None:
    sqs()
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 0}

    assert ids(check_sqs()) == ["django_messenger.W009"]


def test_w009_follows_the_brokers_max_message_size(sqs: Any, settings: Any) -> None:
    # A broker told that its queues take 256 KiB: the 1 MiB quota's largest envelope is too large
    sqs(max_message_size=256 * 1024)

    [warning] = check_sqs()

    assert warning.id == "django_messenger.W009"
    assert str(largest_envelope(256 * 1024)) in (warning.hint or "")
