"""messenger_stats and the stats readers on Dramatiq's StubBroker; W014.

The readers of RabbitMQ and Redis are tested against the real servers in
tests/integration/test_stats.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_messenger import bus, stats
from django_messenger.checks import check_management_url
from django_messenger.models import FailedMessage
from django_messenger.testing import drain
from django_messenger.transports.dramatiq.binding import binding
from tests.amqp import a_broker_on_a_closed_port
from tests.testapp.messages import Flaky, Ping

pytestmark = pytest.mark.django_db(transaction=True)

FLAKY = "tests.testapp.handlers.flaky"


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("messenger_stats", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def as_json(*args: str) -> dict[str, Any]:
    out, _ = run("--json", *args)
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.fixture
def swapped_broker() -> Any:
    """Put another broker in the binding's place for one test: ``swapped_broker(other)``."""
    original = binding._broker

    def swap(other: Any) -> None:
        binding._broker = other

    yield swap
    binding._broker = original


def test_the_queues_messenger_uses(broker: Any) -> None:
    # Every Dramatiq transport's queue (its fan-out actor's) and every handler's, canonical names only
    queues = stats.messenger_queues()
    assert "default" in queues
    assert all(not name.endswith((".DQ", ".XQ")) for name in queues)
    assert queues == sorted(set(queues))


def test_ready_delayed_and_dead_lettered_on_the_stub(broker: Any) -> None:
    # Given a message dead-lettered on the default queue (its handler failed for good),
    bus.dispatch(Flaky(text="doomed"))
    drain(fail_fast=False)
    # two messages ready and one delayed
    bus.dispatch(Ping(text="one"))
    bus.dispatch(Ping(text="two"))
    bus.dispatch(Ping(text="later"), delay=timedelta(minutes=5))

    # When the stats are read
    [default] = [q for q in stats.queue_stats() if q.queue == "default"]

    # Then each column counts its own
    assert (default.ready, default.in_flight, default.delayed, default.dead_lettered) == (2, 0, 1, 1)


def test_in_flight_on_the_stub(broker: Any) -> None:
    # Given a message a consumer took and did not finish
    bus.dispatch(Ping(text="taken"))
    consumer = broker.consume("default")
    taken = next(consumer)
    try:
        [default] = stats.queue_stats(["default"])
        assert (default.ready, default.in_flight) == (0, 1)
    finally:
        consumer.ack(taken)  # the stub's queue counts it as unfinished until then
    [default] = stats.queue_stats(["default"])
    assert (default.ready, default.in_flight) == (0, 0)


def test_the_command_prints_queues_and_failures_per_handler(broker: Any) -> None:
    # Given two failures of one handler and a message waiting
    for text in ("a", "b"):
        bus.dispatch(Flaky(text=text))
    drain(fail_fast=False)
    broker.flush_all()
    bus.dispatch(Ping(text="waiting"))

    out, err = run()

    lines = out.splitlines()
    assert lines[0].split() == ["QUEUE", "READY", "IN", "FLIGHT", "DELAYED", "DEAD-LETTERED"]
    assert [line.split() for line in lines if line.startswith("default ")] == [
        ["default", "1", "0", "0", "0"]
    ]
    assert any(line.split()[:2] == [FLAKY, "2"] for line in lines)
    assert "2 failed message(s)" in out
    assert err == ""


def test_json_has_the_same_counts(broker: Any) -> None:
    bus.dispatch(Flaky(text="x"))
    drain(fail_fast=False)
    broker.flush_all()
    bus.dispatch(Ping(text="waiting"))

    result = as_json("default")

    assert result["queues"] == [
        {"queue": "default", "ready": 1, "in_flight": 0, "delayed": 0, "dead_lettered": 0, "notes": []}
    ]
    [failures] = result["failures"]
    assert failures["handler"] == FLAKY and failures["count"] == 1
    row = FailedMessage.objects.get()
    assert failures["last_failed_at"] == row.last_failed_at.isoformat()
    assert result["notes"] == []


def test_no_failures_and_an_unknown_queue(broker: Any) -> None:
    result = as_json("nowhere")
    assert result["queues"] == [
        {
            "queue": "nowhere",
            "ready": 0,
            "in_flight": 0,
            "delayed": 0,
            "dead_lettered": 0,
            "notes": ["not declared on the broker"],
        }
    ]
    assert result["failures"] == []
    assert "No failed messages." in run("nowhere")[0]


def test_a_delay_or_dead_letter_queue_name_means_its_queue(broker: Any) -> None:
    assert [q.queue for q in stats.queue_stats(["default.DQ", "default.XQ", "default"])] == ["default"]


class BrokerWithoutReader:
    """A broker class that READERS does not list."""

    actors: dict[str, Any] = {}


def test_a_broker_without_a_reader_is_a_note_and_exit_0(broker: Any, swapped_broker: Any) -> None:
    bus.dispatch(Flaky(text="x"))
    drain(fail_fast=False)
    swapped_broker(BrokerWithoutReader())

    out, err = run()
    assert "has no stats reader" in err and "BrokerWithoutReader" in err
    assert FLAKY in out

    result = as_json()
    assert result["queues"] is None
    assert "has no stats reader" in result["notes"][0]
    assert result["failures"][0]["count"] == 1


def test_a_subclass_uses_its_parents_reader() -> None:
    from dramatiq.brokers.stub import StubBroker

    class MyStub(StubBroker):
        pass

    assert stats.reader_for(MyStub()).__name__ == "django_messenger.stats.stub"


def test_an_unreachable_broker_is_a_command_error_without_host_or_credentials(swapped_broker: Any) -> None:
    # Given a RabbitMQ broker nothing listens for
    unreachable = a_broker_on_a_closed_port()
    port = str(unreachable.parameters.port)
    swapped_broker(unreachable)

    # Then the command fails with a CommandError that names the broker, not where it is
    with pytest.raises(CommandError) as raised:
        run("--timeout", "2")
    text = str(raised.value)
    assert "RabbitMQ could not be reached" in text
    assert port not in text and "guest" not in text and "127.0.0.1" not in text


def test_the_timeout_must_be_positive(broker: Any) -> None:
    with pytest.raises(CommandError, match="--timeout"):
        run("--timeout", "0")


def test_failures_over_time_counts_per_handler_and_day(broker: Any) -> None:
    bus.dispatch(Flaky(text="old"))
    bus.dispatch(Flaky(text="new"))
    drain(fail_fast=False)
    old = FailedMessage.objects.order_by("id").first()
    assert old is not None
    FailedMessage.objects.filter(pk=old.pk).update(last_failed_at=timezone.now() - timedelta(days=3))

    days, per_handler = stats.failures_over_time(7)

    assert len(days) == 7 and days[-1] == timezone.localdate()
    assert per_handler == {FLAKY: [0, 0, 0, 1, 0, 0, 1]}


def test_w014_a_management_url_that_is_not_http(settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "RABBITMQ_MANAGEMENT_URL": "amqp://127.0.0.1:15672"}
    [warning] = check_management_url()
    assert warning.id == "django_messenger.W014" and "not an http(s) URL" in warning.msg


def test_w014_a_management_url_on_a_broker_that_is_not_rabbitmq(settings: Any) -> None:
    # The unit tests' broker is the StubBroker
    settings.MESSENGER = {**settings.MESSENGER, "RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:15672"}
    [warning] = check_management_url()
    assert warning.id == "django_messenger.W014" and "not RabbitMQ" in warning.msg


def test_w014_is_silent_without_the_setting_or_on_rabbitmq(settings: Any, swapped_broker: Any) -> None:
    assert check_management_url() == []
    settings.MESSENGER = {**settings.MESSENGER, "RABBITMQ_MANAGEMENT_URL": "http://127.0.0.1:15672"}
    swapped_broker(a_broker_on_a_closed_port())
    assert check_management_url() == []
