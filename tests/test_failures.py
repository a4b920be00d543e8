"""The failure store: final failures kept in the database, and `messenger_failed`."""

from __future__ import annotations

import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from dramatiq import Message

from django_messenger import bus
from django_messenger.encoding import encode_envelope
from django_messenger.envelope import Envelope
from django_messenger.failures import HELD
from django_messenger.middleware import ERROR, TRACEBACK, TRIES
from django_messenger.models import FailedMessage
from django_messenger.registry import registry
from django_messenger.testing import drain
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
    actor = registry.broker.actors[actor_name]
    message: Message[Any] = Message(
        queue_name=actor.queue_name, actor_name=actor_name, args=(payload,), kwargs={}, options={}
    )
    return registry.broker.enqueue(message)


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
    [resent] = broker.queues[registry.handler_named(FLAKY).actor.queue_name].queue
    assert Message.decode(resent).args[0]["body"] == {"text": "nul\x00byte"}
    assert not FailedMessage.objects.exists()


def test_a_held_failure_is_stored_once_without_running_the_handler(broker):
    # Given a held copy of a failure (what a worker sends while the database is down), delivered twice
    envelope = Envelope(Ping(text="held"))
    actor = registry.broker.actors[PING]
    held: Message[Any] = Message(
        queue_name=actor.queue_name,
        actor_name=PING,
        args=(encode_envelope(envelope),),
        kwargs={},
        options={
            HELD: 1,
            ERROR: "OperationalError: the database was down",
            TRACEBACK: "Traceback ...",
            TRIES: 4,
        },
    )
    registry.broker.enqueue(held)
    registry.broker.enqueue(held)

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
