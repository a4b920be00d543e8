"""The admin dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, against the gunicorn server and a rundramatiq worker.

A real worker records a failure; the browser logs in, finds the dashboard from the admin index,
sees the queues, the chart and the failure, retries it, and sees the result; the worker then
handles the message. Screenshots go to ``artifacts/`` (or ``MESSENGER_ARTIFACTS_DIR``).
Without Chromium the test is skipped, and fails in CI (``.ci/run`` installs it); the
``browser``, ``static_server`` and ``artifacts`` fixtures are in conftest.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from django_messenger.models import FailedMessage
from tests.testapp.messages import Flaky
from tests.testapp.models import Effect

from .processes import Process, wait_for
from .rabbit import send_good_message

pytestmark = pytest.mark.django_db(transaction=True)

FLAKY = "tests.testapp.handlers.flaky"
ADMIN = "/demo/admin/"


def test_a_staff_user_retries_a_failure_from_the_dashboard(
    browser: WebDriver, static_server: str, worker: Process, queue_name: str, artifacts: Path
) -> None:
    server = static_server
    # Given a failure recorded by a real worker (the flaky handler fails until it is fixed)
    text = f"browser-{uuid.uuid4().hex[:8]}"
    envelope = send_good_message(queue_name, FLAKY, Flaky(text=text))
    wait_for(
        lambda: FailedMessage.objects.filter(message_id=envelope.message_id).exists(),
        timeout=60,
        what="the failure to be stored",
    )
    password = uuid.uuid4().hex
    User.objects.create_superuser("dashboard-admin", "admin@example.com", password)

    # When a staff user logs in to the admin
    browser.get(f"{server}{ADMIN}login/?next={ADMIN}")
    browser.find_element(By.ID, "id_username").send_keys("dashboard-admin")
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(lambda: browser.current_url.endswith(ADMIN), timeout=30, what="the admin index")

    # and opens the dashboard from the admin index
    browser.find_element(By.LINK_TEXT, "Dashboard").click()
    wait_for(lambda: "failuredashboard" in browser.current_url, timeout=30, what="the dashboard")

    # Then it shows the queues (this run's, read from RabbitMQ), the chart and the failure
    queue_row = browser.find_element(By.CSS_SELECTOR, f'tr.queue[data-queue="{queue_name}"]')
    assert queue_row.find_element(By.CSS_SELECTOR, "td.dead-lettered").text.isdigit()
    handler_row = browser.find_element(By.CSS_SELECTOR, f'tr.handler[data-handler="{FLAKY}"]')
    bar = handler_row.find_element(By.CSS_SELECTOR, "svg.failures rect.bar")
    assert bar.size["height"] > 0 and bar.size["width"] > 0  # drawn by the browser
    failed = FailedMessage.objects.get(message_id=envelope.message_id)
    row = browser.find_element(By.CSS_SELECTOR, f'tr.failure[data-pk="{failed.pk}"]')
    link = row.find_element(By.LINK_TEXT, str(envelope.message_id))
    assert link.get_attribute("href").endswith(f"/django_messenger/failedmessage/{failed.pk}/change/")
    assert "is not fixed yet" in row.text
    browser.save_screenshot(str(artifacts / "dashboard-with-a-failure.png"))

    # When the cause is fixed and the user retries it
    Effect.objects.create(handler="fixed", message_id=uuid.uuid4(), payload={"text": text})
    row.find_element(By.CSS_SELECTOR, "button[name=retry]").click()

    # Then the page says it was sent again, the failure is gone, and the worker handles it
    success = browser.find_element(By.CSS_SELECTOR, "ul.messagelist li.success")
    assert success.get_attribute("textContent").strip() == f"Sent {failed} again to {FLAKY}."
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr.failure[data-pk="{failed.pk}"]')
    browser.save_screenshot(str(artifacts / "dashboard-after-retry.png"))
    wait_for(
        lambda: Effect.objects.filter(handler="flaky", message_id=envelope.message_id).exists(),
        timeout=60,
        what="the worker to handle the retried message",
    )
    assert not FailedMessage.objects.filter(message_id=envelope.message_id).exists()
