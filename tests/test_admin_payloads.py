"""The failure store in the Django admin with any envelope: list, change page and retry action."""

from __future__ import annotations

import uuid

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.urls import path
from django.utils import timezone
from dramatiq import Message

from django_messenger.locator import locator
from django_messenger.models import FailedMessage
from django_messenger.transports.dramatiq.binding import binding

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.test_admin_payloads")]

urlpatterns = [path("admin/", admin.site.urls)]

FLAKY = "tests.testapp.handlers.flaky"


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def a_failure(text: str) -> FailedMessage:
    message_id = uuid.uuid4()
    now = timezone.now()
    return FailedMessage.objects.create(
        message_id=message_id,
        broker_message_id="b1",
        message_type="testapp.Flaky",
        handler=FLAKY,
        queue_name="default",
        payload={
            "v": 1,
            "id": str(message_id),
            "type": "testapp.Flaky",
            "body": {"text": text},
            "stamps": [],
        },
        error="boom",
        tries=1,
        first_failed_at=now,
        last_failed_at=now,
    )


def test_a_failure_with_a_nul_character_is_listed_shown_and_retried(staff_client, broker):
    # Given a stored failure whose envelope holds U+0000
    failed = a_failure("nul\x00byte")
    base = "/admin/django_messenger/failedmessage/"

    # Then the admin lists it and shows it
    assert staff_client.get(base).status_code == 200
    page = staff_client.get(f"{base}{failed.pk}/change/")
    assert page.status_code == 200
    assert str(failed.message_id) in page.content.decode()

    # And its retry action sends that envelope again and forgets the failure
    response = staff_client.post(base, {"action": "retry_selected", "_selected_action": [failed.pk]})
    assert response.status_code == 302
    [resent] = broker.queues[binding.actor_of(locator.handler_named(FLAKY)).queue_name].queue
    assert Message.decode(resent).args[0]["body"] == {"text": "nul\x00byte"}
    assert not FailedMessage.objects.exists()
