"""Migrations of the failure store: rows written before 0002 (payload as jsonb) keep working after it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from dramatiq import Message

from django_messenger.locator import locator
from django_messenger.models import FailedMessage
from django_messenger.transports.dramatiq.binding import binding

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("django_messenger", "0001_failedmessage")]
AFTER = [("django_messenger", "0002_failedmessage_payload_as_text")]
#: The app's newest migration(s), whatever they are: a test that goes back migrates forward to them.
LATEST = MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes("django_messenger")
FLAKY = "tests.testapp.handlers.flaky"


def migrate(targets: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)


@pytest.fixture
def at_0001() -> Iterator[None]:
    """The failure store as migration 0001 left it; migrated to the latest again after the test."""
    migrate(BEFORE)
    yield
    migrate(LATEST)


def test_a_row_stored_as_jsonb_before_0002_is_shown_and_retried_after_it(broker, at_0001):
    # Given a failure stored by a release whose payload column was jsonb
    message_id = uuid.uuid4()
    payload = {"v": 1, "id": str(message_id), "type": "testapp.Flaky", "body": {"text": "old"}, "stamps": []}
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO django_messenger_failedmessage (message_id, broker_message_id, message_type,"
            " handler, queue_name, payload, error, traceback, tries, first_failed_at, last_failed_at)"
            " VALUES (%s, 'b1', 'testapp.Flaky', %s, 'default', %s::jsonb, 'boom', '', 2, now(), now())",
            [message_id, FLAKY, json.dumps(payload)],
        )

    # When the store is migrated to 0002 (payload as JSON text), and on to the latest
    migrate(AFTER)
    migrate(LATEST)

    # Then the row reads back as before, `show` prints it and `retry` sends that envelope again
    assert FailedMessage.objects.get(message_id=message_id).payload == payload
    out = StringIO()
    call_command("messenger_failed", "show", str(message_id), stdout=out)
    assert '"text": "old"' in out.getvalue()
    call_command("messenger_failed", "retry", str(message_id), stdout=out)
    [resent] = broker.queues[binding.actor_of(locator.handler_named(FLAKY)).queue_name].queue
    assert Message.decode(resent).args[0] == payload


def test_0003_keeps_one_row_of_a_failure_stored_twice(at_0001):
    # Given a failure stored twice by a release without the constraint (a race of held copies)
    migrate(AFTER)
    with connection.cursor() as cursor:
        for text in ("first", "second"):
            cursor.execute(
                "INSERT INTO django_messenger_failedmessage (message_id, broker_message_id, message_type,"
                " handler, queue_name, payload, error, traceback, tries, first_failed_at, last_failed_at)"
                " VALUES (%s, 'b1', 'testapp.Flaky', %s, 'default', %s, %s, '', 1, now(), now())",
                [uuid.uuid4(), FLAKY, "{}", text],
            )

    # When the store is migrated to 0003
    migrate(LATEST)

    # Then the first row is kept, and the constraint holds
    assert list(FailedMessage.objects.values_list("error", flat=True)) == ["first"]
