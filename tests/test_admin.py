"""The failure store in the Django admin: who may retry and remove, and a retry that lost a race."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client, RequestFactory
from django.urls import reverse

from django_messenger import bus
from django_messenger.models import FailedMessage
from django_messenger.testing import drain
from tests.conftest import queued
from tests.testapp.messages import Flaky

pytestmark = pytest.mark.django_db(transaction=True)

FLAKY = "tests.testapp.handlers.flaky"
CHANGELIST = "admin:django_messenger_failedmessage_changelist"


def fail_one(text: str = "boom") -> FailedMessage:
    envelope = bus.dispatch(Flaky(text=text))
    drain(fail_fast=False)
    return FailedMessage.objects.get(message_id=envelope.message_id)


def staff(*codenames: str) -> Client:
    """A logged-in client of a staff user (not a superuser) with these failedmessage permissions."""
    user = User.objects.create_user(f"staff-{uuid.uuid4().hex[:8]}", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_messenger", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def post_action(client: Client, action: str, *rows: FailedMessage, **extra: str) -> Any:
    data = {"action": action, "_selected_action": [str(row.pk) for row in rows], **extra}
    return client.post(reverse(CHANGELIST), data, follow=True)


def texts(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture
def failed(broker: Any) -> FailedMessage:
    """One stored failure, and a broker with nothing on it."""
    row = fail_one()
    broker.flush_all()
    return row


def test_a_view_only_user_sees_the_failures_but_no_retry_action(failed):
    client = staff("view_failedmessage")

    response = client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    assert str(failed.message_id) in response.content.decode()
    assert "retry_selected" not in response.content.decode()
    assert "delete_selected" not in response.content.decode()


@pytest.mark.parametrize("action", ["retry_selected", "delete_selected"])
def test_a_forged_action_post_by_a_view_only_user_does_nothing(failed, broker, action):
    # Given a staff user who may only view failed messages
    client = staff("view_failedmessage")

    # When they post the action anyway (the confirmation page's "post" included)
    response = post_action(client, action, failed, post="yes")

    # Then nothing is sent again and the row stays
    assert response.status_code == 200
    assert queued(broker) == []
    assert FailedMessage.objects.filter(pk=failed.pk).exists()


def test_the_change_permission_allows_retry(failed, broker):
    client = staff("view_failedmessage", "change_failedmessage")

    response = post_action(client, "retry_selected", failed)

    [message] = queued(broker)
    assert message.actor_name == FLAKY
    assert message.args[0]["id"] == str(failed.message_id)
    assert not FailedMessage.objects.filter(pk=failed.pk).exists()
    assert "1 message(s) sent again." in texts(response)


def test_a_retry_the_broker_refuses_keeps_the_row_and_shows_no_internals(failed, broker, monkeypatch):
    # Given a broker that refuses every message, with its address in the error
    def refuse(message: Any, *, delay: Any = None) -> Any:
        raise ConnectionError("amqp://guest@10.0.0.7:5672 refused the connection")

    monkeypatch.setattr(broker, "enqueue", refuse)
    client = staff("view_failedmessage", "change_failedmessage")

    # When a user who may retry does
    response = post_action(client, "retry_selected", failed)

    # Then the row stays, and the error says what to do, not where the broker is
    assert FailedMessage.objects.filter(pk=failed.pk).exists()
    [text] = texts(response)
    assert "did not accept it; it stays in the list. Retry later." in text
    assert "10.0.0.7" not in text and "5672" not in text and "refused the connection" not in text


def test_the_delete_permission_allows_removal_but_not_retry(failed, broker):
    client = staff("view_failedmessage", "delete_failedmessage")

    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "retry_selected" not in page and "delete_selected" in page
    post_action(client, "retry_selected", failed)
    assert FailedMessage.objects.filter(pk=failed.pk).exists(), "retry needs the change permission"

    post_action(client, "delete_selected", failed, post="yes")

    assert not FailedMessage.objects.filter(pk=failed.pk).exists()
    assert queued(broker) == [], "removing sends nothing"


def test_a_retry_that_finds_the_failure_gone_warns_and_sends_nothing(failed, broker):
    # Given the rows the admin listed, one of which another person (or the CLI) retried since
    model_admin = admin.site._registry[FailedMessage]
    listed = list(FailedMessage.objects.filter(pk=failed.pk))
    FailedMessage.objects.filter(pk=failed.pk).delete()
    user = User.objects.create_superuser("root", password="x")
    request = RequestFactory().post(reverse(CHANGELIST))
    request.user = user
    request.session = SessionStore()
    request._messages = FallbackStorage(request)

    # When this admin's retry runs on them
    model_admin.retry_selected(request, listed)

    # Then it sends nothing and says so with a warning
    assert queued(broker) == []
    [message] = list(get_messages(request))
    assert message.level_tag == "warning"
    assert f"Failed message {failed.message_id} was already retried or removed." in str(message)
