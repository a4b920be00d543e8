"""``Idempotency-Key`` on messenger writes (CONTRACT section 8), on the StubBroker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from django_messenger import idempotency
from django_messenger.exceptions import BrokerUnavailable, IdempotencyKeyMissing
from django_messenger.models import IdempotencyKey
from django_messenger.transports.dramatiq.transport import DramatiqTransport
from tests.conftest import queued

pytestmark = pytest.mark.django_db

CACHES = {
    "shared": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "messenger_idem_cache"},
}


@pytest.fixture(params=["database", "cache"])
def store(request: Any, settings: Any) -> str:
    """Every test runs on the database store and on a (shared, database) Django cache."""
    if request.param == "cache":
        from django.core.management import call_command

        settings.CACHES = {**settings.CACHES, **CACHES}
        call_command("createcachetable", "messenger_idem_cache", verbosity=0)
        settings.MESSENGER = {**settings.MESSENGER, "IDEMPOTENCY_CACHE": "shared"}
    return str(request.param)


def post(client: APIClient, path: str, data: dict[str, Any], key: str | None) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(path, data, format="json", headers=headers)


class TestReplay:
    def test_the_same_key_and_request_replays_the_first_answer_and_dispatches_nothing(
        self, api_client, broker, store
    ):
        first = post(api_client, "/tracked-pings/", {"text": "hi"}, "k-1")
        second = post(api_client, "/tracked-pings/", {"text": "hi"}, "k-1")

        assert first.status_code == second.status_code == 202
        assert second["Messenger-Message-Id"] == first["Messenger-Message-Id"]
        assert second["Location"] == first["Location"]
        assert second["Idempotent-Replayed"] == "true"
        assert second.content == b""
        assert len(queued(broker)) == 1

    def test_a_quoted_key_is_the_same_key(self, api_client, broker, store):
        first = post(api_client, "/tracked-pings/", {"text": "hi"}, "abc")
        second = post(api_client, "/tracked-pings/", {"text": "hi"}, '"abc"')

        assert second["Messenger-Message-Id"] == first["Messenger-Message-Id"]

    def test_a_synchronous_output_is_replayed_with_its_body(
        self, api_client, broker, settings, store, sync_transport
    ):
        settings.MESSENGER = {**settings.MESSENGER, "IDEMPOTENCY": "optional"}

        first = post(api_client, "/computations/", {"a": 1, "b": 2}, "c-1")
        second = post(api_client, "/computations/", {"a": 1, "b": 2}, "c-1")

        assert first.status_code == second.status_code == 200
        assert second.content == first.content
        assert second.json() == {"a": 3, "b": 0}
        assert second["Content-Type"] == first["Content-Type"]

    def test_two_users_may_use_one_key(self, broker, store):
        ada, eve = APIClient(), APIClient()
        ada.force_authenticate(User.objects.create_user("ada"))
        eve.force_authenticate(User.objects.create_user("eve"))

        first = post(ada, "/tracked-pings/", {"text": "hi"}, "same")
        second = post(eve, "/tracked-pings/", {"text": "hi"}, "same")

        assert first["Messenger-Message-Id"] != second["Messenger-Message-Id"]
        assert len(queued(broker)) == 2

    def test_without_a_key_an_optional_view_dispatches_every_time(self, api_client, broker, store):
        post(api_client, "/tracked-pings/", {"text": "hi"}, None)
        post(api_client, "/tracked-pings/", {"text": "hi"}, None)

        assert len(queued(broker)) == 2

    def test_a_view_without_idempotency_ignores_the_header(self, api_client, broker, store):
        post(api_client, "/pings/", {"text": "hi"}, "k")
        post(api_client, "/pings/", {"text": "hi"}, "k")

        assert len(queued(broker)) == 2

    def test_an_expired_key_dispatches_again(self, api_client, broker, settings):
        first = post(api_client, "/tracked-pings/", {"text": "hi"}, "old")
        IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))

        second = post(api_client, "/tracked-pings/", {"text": "hi"}, "old")

        assert second["Messenger-Message-Id"] != first["Messenger-Message-Id"]
        assert "Idempotent-Replayed" not in second


class TestRefusals:
    def test_the_same_key_with_another_body_is_422(self, api_client, broker, store):
        post(api_client, "/tracked-pings/", {"text": "hi"}, "k-2")

        response = post(api_client, "/tracked-pings/", {"text": "bye"}, "k-2")

        assert response.status_code == 422
        assert "Idempotency-Key" in response.json()["detail"]
        assert len(queued(broker)) == 1

    def test_the_same_key_on_another_path_is_422(self, api_client, broker, settings, store):
        settings.MESSENGER = {**settings.MESSENGER, "IDEMPOTENCY": "optional"}
        post(api_client, "/tracked-pings/", {"text": "hi"}, "k-3")

        assert post(api_client, "/pings/", {"text": "hi"}, "k-3").status_code == 422

    def test_a_key_in_flight_is_409(self, api_client, broker, store):
        owner, data = "", {"text": "hi"}
        claim = idempotency.store().claim(
            owner, "busy", idempotency.fingerprint("POST", "/tracked-pings/", data)
        )
        assert isinstance(claim, idempotency.Claim)

        response = post(api_client, "/tracked-pings/", data, "busy")

        assert response.status_code == 409
        assert response.json()["detail"]
        assert response["Retry-After"] == "1"
        assert queued(broker) == []

    def test_a_key_left_in_flight_by_a_crash_is_taken_over_after_the_lock_timeout(
        self, api_client, broker, settings
    ):
        settings.MESSENGER = {**settings.MESSENGER, "IDEMPOTENCY_LOCK_TIMEOUT": 30}
        data = {"text": "hi"}
        idempotency.store().claim("", "crashed", idempotency.fingerprint("POST", "/tracked-pings/", data))
        IdempotencyKey.objects.update(locked_at=timezone.now() - timedelta(seconds=31))

        response = post(api_client, "/tracked-pings/", data, "crashed")

        assert response.status_code == 202
        assert len(queued(broker)) == 1

    def test_a_missing_key_where_required_is_400(self, api_client, broker, store):
        response = post(api_client, "/keyed-pings/", {"text": "hi"}, None)

        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()["detail"]
        assert queued(broker) == []

    @pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
    def test_a_malformed_key_is_400(self, api_client, broker, key):
        response = api_client.generic(
            "POST",
            "/keyed-pings/",
            b'{"text": "hi"}',
            content_type="application/json",
            headers={"Idempotency-Key": key.encode().decode("latin-1")},
        )

        assert response.status_code == 400
        assert queued(broker) == []

    def test_the_idempotency_setting_requires_a_key_on_every_view(self, api_client, broker, settings):
        settings.MESSENGER = {**settings.MESSENGER, "IDEMPOTENCY": "required"}

        assert post(api_client, "/pings/", {"text": "hi"}, None).status_code == 400


class TestRelease:
    def test_an_invalid_request_leaves_the_key_usable(self, api_client, broker, store):
        assert post(api_client, "/tracked-pings/", {"text": ""}, "k-4").status_code == 400

        assert post(api_client, "/tracked-pings/", {"text": "fixed"}, "k-4").status_code == 202

    def test_a_503_keeps_the_key_usable_for_a_retry(self, api_client, broker, store):
        with mock.patch.object(DramatiqTransport, "send", side_effect=BrokerUnavailable("down")):
            refused = post(api_client, "/tracked-pings/", {"text": "hi"}, "k-5")
        assert refused.status_code == 503

        retried = post(api_client, "/tracked-pings/", {"text": "hi"}, "k-5")

        assert retried.status_code == 202
        assert "Idempotent-Replayed" not in retried
        assert len(queued(broker)) == 1


def test_parse_key_refuses_control_characters():
    with pytest.raises(IdempotencyKeyMissing):
        idempotency.parse_key("a\tb")
    assert idempotency.parse_key(' "k" ') == "k"
    assert idempotency.parse_key(None) is None
