"""The status resource of tracked writes (CONTRACT section 8), on the StubBroker."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from django_messenger import tracking
from django_messenger.encoding import decode_envelope
from django_messenger.middleware import MessengerMiddleware
from django_messenger.models import IdempotencyKey, MessageStatus
from django_messenger.stamps import TrackStamp
from tests.conftest import queued

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada() -> User:
    return User.objects.create_user("ada", password="pw")


@pytest.fixture
def ada_client(ada: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(ada)
    return client


def handled_by_worker(broker: Any, *, failed: bool = False) -> list[Any]:
    """What a worker's MessengerMiddleware does after each queued message ran (or was dead-lettered)."""
    middleware = MessengerMiddleware()
    messages = queued(broker)
    for message in messages:
        if failed:
            tracking.record_quietly(message.args[0], handler=message.actor_name, failed=True)
        else:
            middleware.after_process_message(broker, message)
    return messages


class TestLocation:
    def test_a_tracked_write_answers_202_with_the_location_of_its_status(self, ada_client, broker):
        response = ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")

        assert response.status_code == 202
        message_id = response["Messenger-Message-Id"]
        location = urlsplit(response["Location"])
        assert (location.scheme, location.netloc) == ("http", "testserver")
        assert location.path == f"/demo/messages/{message_id}/"
        assert parse_qs(location.query)["token"]

    def test_the_envelope_carries_a_track_stamp_with_the_sender(self, ada, ada_client, broker):
        ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")

        [message] = queued(broker)
        assert decode_envelope(message.args[0]).last(TrackStamp) == TrackStamp(owner=str(ada.pk), handlers=1)

    def test_an_untracked_write_has_no_location_and_no_track_stamp(self, api_client, broker):
        response = api_client.post("/pings/", {"text": "hi"}, format="json")

        assert response.status_code == 202
        assert "Location" not in response
        [message] = queued(broker)
        assert decode_envelope(message.args[0]).last(TrackStamp) is None

    def test_the_status_setting_tracks_every_messenger_view(self, api_client, broker, settings):
        settings.MESSENGER = {**settings.MESSENGER, "STATUS": True}

        response = api_client.post("/pings/", {"text": "hi"}, format="json")

        assert "/demo/messages/" in response["Location"]

    def test_no_database_row_is_written_at_dispatch(self, ada_client, broker, django_assert_num_queries):
        with django_assert_num_queries(0):
            response = ada_client.post("/tracked-shouts/", {"text": "hi"}, format="json")
        assert response.status_code == 202


class TestStatus:
    def test_a_write_reads_pending_until_a_worker_handled_it_then_handled(self, ada_client, broker):
        location = ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")["Location"]

        pending = ada_client.get(location)
        assert pending.status_code == 200
        assert pending.json()["status"] == "pending"
        assert pending["Retry-After"] == "1"

        handled_by_worker(broker)
        body = ada_client.get(location).json()

        assert body["status"] == "handled"
        assert set(body) == {"id", "status", "created_at", "updated_at"}

    def test_a_fan_out_is_handled_only_once_every_handler_handled_it(self, broker):
        client = APIClient()
        location = client.post("/tracked-shouts/", {"text": "hi"}, format="json")["Location"]
        [fanned] = queued(broker)
        payload = fanned.args[0]
        stamp = tracking.track_stamp(payload)
        assert stamp == TrackStamp(owner="", handlers=2)

        tracking.record(
            uuid.UUID(payload["id"]), stamp, handler="tests.testapp.handlers.shout_one", failed=False
        )
        assert client.get(location).json()["status"] == "pending"
        tracking.record(
            uuid.UUID(payload["id"]), stamp, handler="tests.testapp.handlers.shout_two", failed=False
        )
        assert client.get(location).json()["status"] == "handled"

    def test_a_handler_failed_for_good_reads_failed_with_an_error_and_no_exception_text(
        self, ada_client, broker
    ):
        location = ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")["Location"]

        handled_by_worker(broker, failed=True)
        body = ada_client.get(location).json()

        assert body["status"] == "failed"
        assert body["error"] == tracking.FAILED_SUMMARY

    def test_a_retried_failure_that_is_handled_reads_handled(self, ada_client, broker):
        location = ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")["Location"]
        messages = handled_by_worker(broker, failed=True)

        MessengerMiddleware().after_process_message(broker, messages[0])

        assert ada_client.get(location).json()["status"] == "handled"

    def test_another_user_gets_404_before_and_after_the_worker(self, ada_client, broker):
        location = ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")["Location"]
        eve = APIClient()
        eve.force_authenticate(User.objects.create_user("eve"))

        assert eve.get(location).status_code == 404
        handled_by_worker(broker)
        assert eve.get(location).status_code == 404
        assert APIClient().get(location).status_code == 404  # anonymous

    def test_staff_read_a_recorded_status(self, ada_client, broker):
        location = ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")["Location"]
        handled_by_worker(broker)
        staff = APIClient()
        staff.force_authenticate(User.objects.create_user("root", is_staff=True))

        assert staff.get(urlsplit(location).path).json()["status"] == "handled"

    def test_the_sender_reads_a_recorded_status_without_the_token(self, ada_client, broker):
        location = ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")["Location"]
        handled_by_worker(broker)

        assert ada_client.get(urlsplit(location).path).json()["status"] == "handled"

    def test_an_anonymous_sender_reads_its_status_with_the_token_only(self, broker):
        client = APIClient()
        location = client.post("/tracked-shouts/", {"text": "hi"}, format="json")["Location"]
        handled_by_worker(broker)

        assert client.get(location).status_code == 200
        assert client.get(urlsplit(location).path).status_code == 404

    @pytest.mark.parametrize("token", ["", "nonsense", "1abc:forged"])
    def test_an_unknown_id_or_a_forged_token_is_404(self, ada_client, token):
        response = ada_client.get(f"/demo/messages/{uuid.uuid4()}/", {"token": token})

        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}

    def test_a_token_of_another_message_is_404(self, ada_client, ada, broker):
        token = tracking.make_token(uuid.uuid4(), str(ada.pk))

        assert ada_client.get(f"/demo/messages/{uuid.uuid4()}/", {"token": token}).status_code == 404

    def test_an_expired_token_is_404(self, ada_client, broker, settings):
        location = ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")["Location"]
        settings.MESSENGER = {**settings.MESSENGER, "STATUS_TTL": 0.000001}

        assert ada_client.get(location).status_code == 404

    def test_a_sync_dispatch_reads_handled_at_once(self, ada_client, broker, sync_transport):
        location = ada_client.post("/tracked-pings/", {"text": "hi"}, format="json")["Location"]

        assert ada_client.get(location).json()["status"] == "handled"


class TestMiddleware:
    def test_an_untracked_message_writes_nothing(self, api_client, broker):
        api_client.post("/pings/", {"text": "hi"}, format="json")

        handled_by_worker(broker)

        assert not MessageStatus.objects.exists()

    def test_a_malformed_track_stamp_is_ignored(self):
        payload = {"id": str(uuid.uuid4()), "stamps": [{"name": "track", "data": {"owner": "1"}}]}

        tracking.record_quietly(payload, handler="x", failed=False)

        assert not MessageStatus.objects.exists()


class TestPrune:
    def test_messenger_prune_deletes_old_statuses_and_expired_keys(self, settings, capsys):
        now = timezone.now()
        old, new = now - timedelta(days=8), now - timedelta(days=1)
        for when in (old, new):
            MessageStatus.objects.create(message_id=uuid.uuid4(), created_at=when, updated_at=when)
            IdempotencyKey.objects.create(
                key=str(when), fingerprint="f", created_at=when - timedelta(hours=24), locked_at=when
            )

        call_command("messenger_prune")

        assert list(MessageStatus.objects.values_list("updated_at", flat=True)) == [new]
        assert IdempotencyKey.objects.count() == 0
        assert "Deleted 1 status record(s) and 2 idempotency key(s)." in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_a_first_outcome_is_one_insert_and_later_ones_update_the_row(django_assert_num_queries):
    # Given a tracked message of a fan-out to two handlers, no row yet (none is written at dispatch)
    message_id, stamp = uuid.uuid4(), TrackStamp(owner="", handlers=2)

    # When the first handler's outcome is recorded by a worker (outside any transaction)
    with django_assert_num_queries(1):
        tracking.record(message_id, stamp, handler="one", failed=False)

    # Then the second handler's updates that row, and a retry of a failure turns it into a success
    tracking.record(message_id, stamp, handler="two", failed=True)
    row = MessageStatus.objects.get(message_id=message_id)
    assert (row.handled, row.failed, row.status) == (["one"], {"two": tracking.FAILED_SUMMARY}, "failed")
    tracking.record(message_id, stamp, handler="two", failed=False)
    row = MessageStatus.objects.get(message_id=message_id)
    assert (sorted(row.handled), row.failed, row.status) == (["one", "two"], {}, "handled")


@pytest.mark.django_db(transaction=True)
def test_handlers_of_a_fan_out_recording_at_once_lose_no_outcome():
    # Given a tracked message of a fan-out to six handlers, recorded by six threads at once
    import threading

    from django.db import connection

    message_id, stamp = uuid.uuid4(), TrackStamp(owner="", handlers=6)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            start.wait()
            tracking.record(message_id, stamp, handler=name, failed=False)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(f"h{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one INSERT won, the others updated the row under its lock: every outcome is there
    assert errors == []
    row = MessageStatus.objects.get(message_id=message_id)
    assert sorted(row.handled) == [f"h{i}" for i in range(6)] and row.status == "handled"


def test_a_first_outcome_inside_a_transaction_leaves_it_usable_on_a_conflict():
    # Given a row recorded already, and a caller's transaction (a sync dispatch in a request's)
    from django.db import transaction

    message_id, stamp = uuid.uuid4(), TrackStamp(owner="", handlers=2)
    tracking.record(message_id, stamp, handler="one", failed=False)
    with transaction.atomic():
        # When another outcome is recorded in it (its INSERT conflicts, in a savepoint)
        tracking.record(message_id, stamp, handler="two", failed=False)
        # Then the transaction still runs queries
        assert MessageStatus.objects.filter(message_id=message_id).count() == 1
    assert MessageStatus.objects.get(message_id=message_id).status == "handled"
