"""The failure store: final failures kept in the database, and `messenger_failed`."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from dramatiq import Message
from dramatiq.common import current_millis
from dramatiq.middleware import CurrentMessage

from django_messenger import bus, failures, handler
from django_messenger.delays import ETA
from django_messenger.encoding import encode_envelope
from django_messenger.envelope import Envelope
from django_messenger.exceptions import FailedMessageGone
from django_messenger.failures import ERROR, FIRST_FAILED_AT, HELD, MAX_ERROR_TEXT, RETRIES, TRACEBACK
from django_messenger.locator import locator
from django_messenger.models import FailedMessage
from django_messenger.testing import drain
from django_messenger.transports.dramatiq.binding import binding
from tests.conftest import queued
from tests.testapp.messages import Flaky, Ping
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

FLAKY = "tests.testapp.handlers.flaky"
PING = "tests.testapp.handlers.handle"


def run(*args: str) -> str:
    out = StringIO()
    call_command("messenger_failed", *args, stdout=out, stderr=out)
    return out.getvalue()


def fail_one(text: str = "boom") -> uuid.UUID:
    envelope = bus.dispatch(Flaky(text=text))
    drain(fail_fast=False)
    return envelope.message_id


def enqueue_raw(actor_name: str, payload: Any) -> Message[Any]:
    actor = binding.broker.actors[actor_name]
    message: Message[Any] = Message(
        queue_name=actor.queue_name, actor_name=actor_name, args=(payload,), kwargs={}, options={}
    )
    return binding.broker.enqueue(message)


def test_a_handler_that_keeps_failing_is_stored_after_its_last_retry(broker):
    message_id = fail_one()

    failed = FailedMessage.objects.get(message_id=message_id)
    assert failed.handler == FLAKY
    assert failed.message_type == "testapp.Flaky"
    assert failed.tries == 2, "one try and max_retries=1 retry"
    assert "NotFixedYet: boom is not fixed yet" in failed.error
    assert "raise NotFixedYet" in failed.traceback
    assert failed.payload["body"] == {"text": "boom"}
    assert failed.first_failed_at <= failed.last_failed_at
    assert len(broker.dead_letters) == 1, "and Dramatiq dead-lettered it"


def test_list_shows_the_failures(broker):
    message_id = fail_one()

    output = run("list")

    assert str(message_id) in output
    assert FLAKY in output and "testapp.Flaky" in output and "NotFixedYet" in output
    assert "1 failed message(s)" in output
    assert str(message_id) not in run("list", "--handler", "someone.else")


def test_show_prints_body_error_and_traceback(broker):
    message_id = fail_one()

    output = run("show", str(message_id))

    assert '"text": "boom"' in output
    assert "NotFixedYet" in output
    assert "Traceback (most recent call last)" in output


def test_retry_sends_to_the_failed_handler_and_forgets_the_failure(broker):
    message_id = fail_one("fix me")
    Effect.objects.create(handler="fixed", message_id=uuid.uuid4(), payload={"text": "fix me"})

    output = run("retry", str(message_id))
    drain()

    assert "sent again" in output
    assert Effect.objects.filter(handler="flaky", message_id=message_id).exists()
    assert not FailedMessage.objects.filter(message_id=message_id).exists()


def test_retry_all_and_remove_all(broker):
    fail_one("a")
    fail_one("b")
    assert FailedMessage.objects.count() == 2

    run("retry", "--all")
    drain(fail_fast=False)
    assert FailedMessage.objects.count() == 2, "still failing: stored again"

    assert "Removed 2" in run("remove", "--all")
    assert FailedMessage.objects.count() == 0


def test_remove_by_id(broker):
    message_id = fail_one()

    run("remove", str(message_id))

    assert not FailedMessage.objects.exists()


@pytest.mark.parametrize("action", ["show", "retry", "remove"])
def test_an_unknown_id_is_an_error(broker, action):
    with pytest.raises(CommandError, match="No failed message"):
        run(action, str(uuid.uuid4()))
    with pytest.raises(CommandError, match="No failed message"):
        run(action, "not-a-uuid")


def test_retry_needs_ids_or_all(broker):
    with pytest.raises(CommandError):
        run("retry")


def retry_in_threads(pk: int, count: int) -> list[object]:
    """``count`` threads, each with its own database connection, retry row ``pk`` at once."""
    barrier = threading.Barrier(count)
    outcomes: list[object] = [None] * count

    def one(index: int) -> None:
        try:
            row = FailedMessage.objects.get(pk=pk)
            barrier.wait(timeout=10)
            outcomes[index] = failures.retry(row)
        except Exception as exc:
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_retries_of_one_failure_send_it_once(broker, round_):
    # Given one stored failure, and nothing on the broker
    message_id = fail_one(f"race {round_}")
    pk = FailedMessage.objects.get(message_id=message_id).pk
    broker.flush_all()

    # When three retries of it race
    outcomes = retry_in_threads(pk, 3)

    # Then exactly one sends it; the others are told it is gone
    assert [message.args[0]["id"] for message in queued(broker)] == [str(message_id)]
    assert sum(isinstance(outcome, Message) for outcome in outcomes) == 1, outcomes
    losers = [outcome for outcome in outcomes if not isinstance(outcome, Message)]
    assert all(isinstance(loser, FailedMessageGone) for loser in losers), losers
    assert all(
        f"Failed message {message_id} was already retried or removed." == str(loser) for loser in losers
    )
    assert not FailedMessage.objects.filter(pk=pk).exists()


def test_retry_of_a_row_removed_since_it_was_read_sends_nothing(broker):
    message_id = fail_one()
    row = FailedMessage.objects.get(message_id=message_id)
    broker.flush_all()
    run("remove", str(message_id))

    with pytest.raises(FailedMessageGone, match="already retried or removed"):
        failures.retry(row)

    assert queued(broker) == []


def test_the_cli_loser_of_a_race_exits_non_zero_and_says_why(broker, monkeypatch):
    # Given a failure that another retry takes between the CLI's lookup and its own retry
    message_id = fail_one()
    broker.flush_all()
    select = failures.select

    def select_then_lose_the_race(*args: Any, **kwargs: Any) -> list[FailedMessage]:
        rows = select(*args, **kwargs)
        failures.retry(FailedMessage.objects.get(pk=rows[0].pk))
        return rows

    monkeypatch.setattr(failures, "select", select_then_lose_the_race)
    out = StringIO()

    # When the CLI retries it
    with pytest.raises(CommandError, match="already retried or removed"):
        call_command("messenger_failed", "retry", str(message_id), stdout=out, stderr=out)

    # Then only the winner sent it
    assert len(queued(broker)) == 1
    assert f"Failed message {message_id} was already retried or removed." in out.getvalue()
    assert "sent again" not in out.getvalue()


def test_a_retry_whose_send_fails_keeps_the_failure(broker, monkeypatch):
    # Given a failure, and a broker that refuses every message
    message_id = fail_one()
    broker.flush_all()

    def refuse(message: Any, *, delay: Any = None) -> Any:
        raise ConnectionError("the broker is down")

    with monkeypatch.context() as patched:
        patched.setattr(broker, "enqueue", refuse)

        # When it is retried
        with pytest.raises(CommandError, match="could not be retried"):
            run("retry", str(message_id))

    # Then the row stays, and a later retry sends it
    assert FailedMessage.objects.filter(message_id=message_id).exists()
    assert queued(broker) == []
    run("retry", str(message_id))
    assert len(queued(broker)) == 1
    assert not FailedMessage.objects.filter(message_id=message_id).exists()


class TestPoison:
    """Messages that cannot be decoded are dead-lettered at once, stored, and the worker goes on."""

    @pytest.mark.parametrize(
        "payload, error",
        [
            (
                {"v": 1, "id": str(uuid.uuid4()), "type": "os.system", "body": {}, "stamps": []},
                "Unknown message",
            ),
            (
                {"v": 1, "id": str(uuid.uuid4()), "type": "testapp.Ping", "body": {"nope": 1}, "stamps": []},
                "no field",
            ),
            (
                {"v": 1, "id": str(uuid.uuid4()), "type": "testapp.Ping", "body": [], "stamps": []},
                "JSON object",
            ),
            ({"v": 99, "id": str(uuid.uuid4()), "type": "testapp.Ping", "body": {}, "stamps": []}, "version"),
            ("just a string", "must be a JSON object"),
        ],
    )
    def test_each_poison_message_is_stored_and_a_good_one_after_it_is_handled(self, broker, payload, error):
        enqueue_raw(PING, payload)
        good = bus.dispatch(Ping(text="after the poison"))

        drain(fail_fast=False)

        failed = FailedMessage.objects.get()
        assert "MessageDecodingFailed" in failed.error and error in failed.error
        assert failed.tries == 1, "poison is never retried"
        assert Effect.objects.filter(message_id=good.message_id).exists()

    def test_an_oversized_envelope_is_poison(self, broker, settings):
        settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 500}
        envelope = Envelope(Ping(text="x" * 1000))
        enqueue_raw(PING, encode_envelope(envelope))

        drain(fail_fast=False)

        failed = FailedMessage.objects.get(message_id=envelope.message_id)
        assert "MAX_MESSAGE_SIZE" in failed.error
        assert not Effect.objects.filter(message_id=envelope.message_id).exists()

    def test_a_message_of_another_type_sent_to_a_handler_is_poison(self, broker):
        envelope = Envelope(Flaky(text="wrong actor"))
        enqueue_raw(PING, encode_envelope(envelope))

        drain(fail_fast=False)

        assert "MessageDecodingFailed" in FailedMessage.objects.get(message_id=envelope.message_id).error


def test_an_envelope_with_a_nul_character_is_stored_shown_and_retried(broker):
    # Given a handler that fails for good on a message whose text holds U+0000, which jsonb refuses
    message_id = fail_one("nul\x00byte")

    # Then the failure is stored all the same, the envelope intact
    failed = FailedMessage.objects.get(message_id=message_id)
    assert failed.payload["body"] == {"text": "nul\x00byte"}
    assert failed.error and "\x00" not in failed.error + failed.traceback, "texts are stored NUL-free"
    # And `show` prints it, and `retry` sends exactly that envelope again
    assert '"text": "nul\\u0000byte"' in run("show", str(message_id))
    assert f"{message_id} sent again" in run("retry", str(message_id))
    [resent] = broker.queues[binding.actor_of(locator.handler_named(FLAKY)).queue_name].queue
    assert Message.decode(resent).args[0]["body"] == {"text": "nul\x00byte"}
    assert not FailedMessage.objects.exists()


def test_a_held_failure_is_stored_once_without_running_the_handler(broker):
    # Given a held copy of a failure (what a worker sends while the database is down), delivered twice
    envelope = Envelope(Ping(text="held"))
    actor = binding.broker.actors[PING]
    held: Message[Any] = Message(
        queue_name=actor.queue_name,
        actor_name=PING,
        args=(encode_envelope(envelope),),
        kwargs={},
        options={
            HELD: 1,
            ERROR: "OperationalError: the database was down",
            TRACEBACK: "Traceback ...",
            RETRIES: 3,  # tries = retries + 1
        },
    )
    binding.broker.enqueue(held)
    binding.broker.enqueue(held)

    # When a worker receives them
    drain()

    # Then the failure is stored once, as the copy carried it; the handler did not run; nothing dead-lettered
    failed = FailedMessage.objects.get(message_id=envelope.message_id)
    assert (failed.handler, failed.error, failed.tries) == (
        PING,
        "OperationalError: the database was down",
        4,
    )
    assert failed.broker_message_id == held.message_id
    assert not Effect.objects.filter(message_id=envelope.message_id).exists()
    assert broker.dead_letters == []


# -- what a review of the failure store found ---------------------------------------------


def test_a_long_error_on_a_large_message_is_still_stored(broker):
    # Given a 600 kB message whose handler fails with the whole text in its error: three copies
    # of that error in the retry's options would outgrow what BoundedJSONEncoder lets a worker parse
    message_id = fail_one("y" * 600_000)

    # Then the failure is stored all the same, its error and traceback clipped, the envelope whole
    failed = FailedMessage.objects.get(message_id=message_id)
    assert len(failed.error) < MAX_ERROR_TEXT + 100 and len(failed.traceback) < MAX_ERROR_TEXT + 100
    assert "characters left out" in failed.error
    assert failed.payload["body"]["text"] == "y" * 600_000


def test_a_lone_surrogate_in_the_error_and_the_type_is_stored(broker):
    # Given a forged message whose type name holds a lone surrogate, which UTF-8 cannot encode
    payload = {"v": 1, "id": str(uuid.uuid4()), "type": "testapp.\ud800", "body": {}, "stamps": []}
    message: Message[Any] = Message(
        queue_name="default", actor_name=PING, args=(payload,), kwargs={}, options={}
    )

    # When its failure is kept, with the surrogate in the error text too
    failures.keep(message, error="UnknownMessageType: 'testapp.\ud800'", traceback="")

    # Then it is stored, the surrogate escaped
    failed = FailedMessage.objects.get(broker_message_id=message.message_id)
    assert failed.message_type == "testapp.\\ud800"
    assert "\\ud800" in failed.error


def test_one_failure_recorded_by_two_workers_at_once_is_one_row(broker):
    # Given one failure that two worker threads record at the same moment (two held copies of it)
    message: Message[Any] = Message(
        queue_name="default",
        actor_name=FLAKY,
        args=(encode_envelope(Envelope(Flaky("twice"))),),
        kwargs={},
        options={},
    )
    barrier = threading.Barrier(2)
    rows: list[FailedMessage] = []

    def one() -> None:
        try:
            barrier.wait()
            rows.append(failures.record(message, error="boom"))
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then there is one row, and both got it
    assert FailedMessage.objects.count() == 1
    assert len({row.pk for row in rows}) == 1 and len(rows) == 2


def test_a_retry_before_the_due_time_waits_the_rest_of_the_delay(broker):
    # Given a long-delayed message that failed before it was due (its delay hop was refused)
    due = current_millis() + 3_600_000
    payload = encode_envelope(Envelope(Flaky("later")))
    message: Message[Any] = Message(
        queue_name="default", actor_name=FLAKY, args=(payload,), kwargs={}, options={ETA: due}
    )
    failed = failures.record(message, error="DelayHopFailed: the broker refused the hop")
    assert failed.due_at is not None

    # When it is retried
    failures.retry(failed)

    # Then it is sent again with its due time, to wait in hops, not handled at once
    [resent] = queued(broker)
    assert resent.options[ETA] == due
    assert resent.options["eta"] > current_millis() + 60_000


# -- the failure notes come from Dramatiq's own options -----------------------------------


@dataclasses.dataclass
class TwoFailures:
    text: str


class GiveUp(Exception):
    """In the handler's ``throws``: not retried."""


def test_a_retry_carries_dramatiqs_options_and_the_first_failure_time_only(broker, scratch):
    # Given a handler that fails once (retried), then with an error in its throws
    seen: list[dict[str, Any]] = []

    @handler(max_retries=3, min_backoff=1, max_backoff=1, throws=(GiveUp,))
    def fails_twice(message: TwoFailures) -> None:
        current = CurrentMessage.get_current_message()
        assert current is not None
        seen.append(dict(current.options))
        if len(seen) == 1:
            raise ValueError("first try")
        raise GiveUp("second try")

    # When it is dispatched and the worker runs it
    envelope = bus.dispatch(TwoFailures(text="x"))
    drain(fail_fast=False)

    # Then the retry carried Dramatiq's retries and traceback, and messenger's first failure time,
    # and none of messenger's former copies of them
    assert [options.get(RETRIES, 0) for options in seen] == [0, 1]
    retry = seen[1]
    assert "ValueError: first try" in retry[TRACEBACK]
    assert isinstance(retry[FIRST_FAILED_AT], int)
    assert not {"messenger_tries", "messenger_error", "messenger_traceback"} & set(retry)

    # And the stored failure counts both tries (Retries does not count a failure in throws),
    # with the final error and its traceback, and the first failure's time
    failed = FailedMessage.objects.get(message_id=envelope.message_id)
    assert failed.tries == 2
    assert failed.error == "tests.test_failures.GiveUp: second try"
    assert "raise GiveUp" in failed.traceback and "first try" not in failed.traceback
    assert int(failed.first_failed_at.timestamp() * 1000) == retry[FIRST_FAILED_AT]
    assert failed.first_failed_at <= failed.last_failed_at


def test_a_held_copy_carries_the_tries_as_dramatiqs_retries(broker):
    # Given a message that failed for good on its third try while the database was down
    message: Message[Any] = Message(
        queue_name="default",
        actor_name=FLAKY,
        args=(encode_envelope(Envelope(Flaky("held"))),),
        kwargs={},
        options={RETRIES: 3, FIRST_FAILED_AT: 123},
    )

    # When its failure is held on the broker
    held = failures.hold(message, error="boom", traceback="Traceback ...", tries=3)

    # Then the copy carries the tries as Dramatiq's retries (tries - 1), which a worker reads back
    assert held.options[RETRIES] == 2 and failures.tries(held) == 3
    assert (held.options[ERROR], held.options[TRACEBACK], held.options[FIRST_FAILED_AT]) == (
        "boom",
        "Traceback ...",
        123,
    )


def test_a_failure_without_an_envelope_id_is_found_by_the_id_list_shows(broker):
    # Given a poison message too malformed to carry an envelope id
    enqueue_raw(PING, {"v": 1, "type": "os.system"})
    drain(fail_fast=False)
    failed = FailedMessage.objects.get()
    assert failed.message_id is None

    # When `list` shows it (by its broker message id), then `show` and `remove` find it by that id
    assert failed.broker_message_id in run("list")
    assert "os.system" in run("show", failed.broker_message_id)
    run("remove", failed.broker_message_id)
    assert not FailedMessage.objects.exists()
