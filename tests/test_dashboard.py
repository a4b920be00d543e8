"""The admin dashboard with Django's test client: who sees it, what it shows, the retry action.

tests/integration/test_dashboard_browser.py drives it in a real browser against a real server.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from django_messenger import bus
from django_messenger.models import FailedMessage
from django_messenger.testing import drain
from django_messenger.transports.dramatiq.binding import binding
from tests.amqp import a_broker_on_a_closed_port
from tests.conftest import queued
from tests.testapp.messages import Flaky, Ping

pytestmark = pytest.mark.django_db(transaction=True)

FLAKY = "tests.testapp.handlers.flaky"
DASHBOARD = "admin:django_messenger_failuredashboard_changelist"


def user(*codenames: str, staff: bool = True, enforce_csrf: bool = False) -> Client:
    """A logged-in client of a user (staff, not superuser) with these failedmessage permissions."""
    account = User.objects.create_user(f"user-{uuid.uuid4().hex[:8]}", password="x", is_staff=staff)
    account.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_messenger", codename__in=codenames)
    )
    client = Client(enforce_csrf_checks=enforce_csrf)
    client.force_login(account)
    return client


@pytest.fixture
def failed(broker: Any) -> FailedMessage:
    """One stored failure of the flaky handler, and a message ready on the default queue."""
    envelope = bus.dispatch(Flaky(text="boom"))
    drain(fail_fast=False)
    broker.flush_all()
    bus.dispatch(Ping(text="waiting"))
    return FailedMessage.objects.get(message_id=envelope.message_id)


def test_anonymous_users_are_sent_to_the_login(failed: FailedMessage) -> None:
    response = Client().get(reverse(DASHBOARD))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_staff_without_the_view_permission_is_refused(failed: FailedMessage) -> None:
    client = user()
    assert client.get(reverse(DASHBOARD)).status_code == 403
    assert "Dashboard" not in client.get(reverse("admin:index")).content.decode()


def test_a_user_who_is_not_staff_is_sent_to_the_login(failed: FailedMessage) -> None:
    response = user("view_failedmessage", staff=False).get(reverse(DASHBOARD))
    assert response.status_code == 302


def test_the_admin_index_links_the_dashboard(failed: FailedMessage) -> None:
    index = user("view_failedmessage").get(reverse("admin:index")).content.decode()
    assert f'href="{reverse(DASHBOARD)}"' in index and ">Dashboard<" in index
    changelist = user("view_failedmessage").get(reverse("admin:django_messenger_failedmessage_changelist"))
    assert f'href="{reverse(DASHBOARD)}"' in changelist.content.decode()


def test_a_viewer_sees_queues_the_chart_and_the_latest_failures(failed: FailedMessage) -> None:
    response = user("view_failedmessage").get(reverse(DASHBOARD))
    assert response.status_code == 200
    page = response.content.decode()

    # The queues, counted by the broker's reader
    [default] = [q for q in response.context["queues"] if q.queue == "default"]
    assert (default.ready, default.dead_lettered) == (1, 0)
    assert 'data-queue="default"' in page

    # One failure of the flaky handler today, drawn as one bar of the SVG chart
    assert f'data-handler="{FLAKY}"' in page
    assert "<svg" in page and page.count('class="bar"') == 1 and 'data-count="1"' in page
    # no script of its own, nothing from another host (the admin's own static files aside)
    content = page[page.index('id="content-main"') :]
    assert "<script" not in content and "//" not in content.replace("http://www.w3.org/2000/svg", "")

    # The latest failure links to its admin page; a viewer gets no retry button
    change = reverse("admin:django_messenger_failedmessage_change", args=[failed.pk])
    assert f'href="{change}"' in page and str(failed.message_id) in page
    assert 'name="retry"' not in page


def test_a_viewer_cannot_retry(failed: FailedMessage, broker: Any) -> None:
    response = user("view_failedmessage").post(reverse(DASHBOARD), {"retry": failed.pk})
    assert response.status_code == 403
    assert FailedMessage.objects.filter(pk=failed.pk).exists()


def test_retry_sends_the_failure_again_and_says_so(failed: FailedMessage, broker: Any) -> None:
    client = user("view_failedmessage", "change_failedmessage")
    assert 'name="retry"' in client.get(reverse(DASHBOARD)).content.decode()
    broker.flush_all()

    response = client.post(reverse(DASHBOARD), {"retry": failed.pk}, follow=True)

    assert response.redirect_chain == [(reverse(DASHBOARD), 302)]
    assert [str(m) for m in response.context["messages"]] == [f"Sent {failed} again to {FLAKY}."]
    assert not FailedMessage.objects.filter(pk=failed.pk).exists()
    [message] = queued(broker)
    assert message.actor_name == FLAKY and message.args[0]["id"] == str(failed.message_id)


def test_retry_of_a_failure_already_gone(failed: FailedMessage, broker: Any) -> None:
    client = user("view_failedmessage", "change_failedmessage")
    FailedMessage.objects.filter(pk=failed.pk).delete()
    broker.flush_all()

    for value in (str(failed.pk), "not-a-number", ""):
        response = client.post(reverse(DASHBOARD), {"retry": value}, follow=True)
        assert [str(m) for m in response.context["messages"]] == [
            "That failed message was already retried or removed: nothing was sent."
        ]
    assert queued(broker) == []


def test_retry_needs_the_csrf_token(failed: FailedMessage) -> None:
    client = user("view_failedmessage", "change_failedmessage", enforce_csrf=True)
    assert client.post(reverse(DASHBOARD), {"retry": failed.pk}).status_code == 403
    assert FailedMessage.objects.filter(pk=failed.pk).exists()


def test_the_page_renders_with_a_notice_when_the_broker_is_down(failed: FailedMessage, settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "PUBLISH_TIMEOUT": 2}
    original = binding._broker
    unreachable = a_broker_on_a_closed_port()
    binding._broker = unreachable
    try:
        response = user("view_failedmessage").get(reverse(DASHBOARD))
    finally:
        binding._broker = original
    assert response.status_code == 200
    page = response.content.decode()
    assert "Queue counts are not available: RabbitMQ could not be reached" in page
    assert str(unreachable.parameters.port) not in page and "guest" not in page
    # the failures are still there
    assert f'data-handler="{FLAKY}"' in page and str(failed.message_id) in page
