"""DRF's browsable API in a real browser: headless Chromium (Selenium) against the gunicorn server
and a rundramatiq worker on RabbitMQ.

A person submits the demo's HTML form and its raw-data form (``/demo/books/``, a tracked
resource) and sees DRF's page with ``HTTP 202 Accepted``, the message id and the status link,
which reads ``handled`` once the worker applied the write; then sends the DELETE with a body of an
input view (``/renamed-articles/<id>/``) from its own form. Screenshots go to ``artifacts/``.
Without Chromium the test is skipped, and fails in CI (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from testproject.library.models import Book
from tests.testapp.models import Article, Effect

from .processes import Process, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BOOKS = "/demo/books/"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def response_info(browser: WebDriver) -> str:
    """The text of the page's answer panel ("HTTP 202 Accepted", the headers), "" while it loads."""
    try:
        panels = browser.find_elements(By.CSS_SELECTOR, ".response-info")
        return panels[0].text if panels else ""
    except StaleElementReferenceException:  # the raw-data form's script replaced the document
        return ""


def shown_answer(browser: WebDriver, status: str) -> str:
    """Wait for the page to show ``status``; returns the message id it shows."""
    info = wait_for(lambda: status in response_info(browser) and response_info(browser), what=status)
    found = re.search(rf"Messenger-Message-Id: ({UUID})", info)
    assert found is not None, info
    assert "Content-Type" not in info, "an API client's 202 has no Content-Type: the page shows none"
    return found.group(1)


def test_a_person_sees_what_each_write_did(
    browser: WebDriver, static_server: str, worker: Process, artifacts: Path
) -> None:
    server = static_server
    title = f"browsable-{uuid.uuid4().hex[:8]}"

    # Given the demo's browsable API, when a person fills in the HTML form and posts it
    browser.get(f"{server}{BOOKS}")
    browser.find_element(By.CSS_SELECTOR, 'a[name="html-tab"][href="#post-object-form"]').click()
    form = browser.find_element(By.ID, "post-object-form")
    form.find_element(By.NAME, "title").send_keys(title)
    form.find_element(By.NAME, "author").send_keys("Frank Herbert")
    form.find_element(By.NAME, "price").send_keys("9.99")
    form.find_element(By.CSS_SELECTOR, "button.btn-primary").click()

    # Then the page shows the 202, the message id and the status resource as a link
    message_id = shown_answer(browser, "HTTP 202 Accepted")
    assert browser.current_url == f"{server}{BOOKS}"
    link = browser.find_element(By.CSS_SELECTOR, f'.response-info a[href*="/demo/messages/{message_id}/"]')
    browser.save_screenshot(str(artifacts / "browsable-html-form-202.png"))
    # and the worker applies the write
    wait_for(lambda: Book.objects.filter(title=title).exists(), timeout=60, what="the worker to add the book")

    # When the person follows the link, it reads handled (the worker recorded it)
    link.click()

    def handled() -> bool:
        info = response_info(browser)
        if '"status": "handled"' in info:
            return True
        browser.refresh()
        return False

    wait_for(handled, timeout=60, interval=0.5, what="the status page to read handled")
    assert f'"id": "{message_id}"' in response_info(browser)
    browser.save_screenshot(str(artifacts / "browsable-status-handled.png"))

    # When the person sends JSON from the raw-data form (its script sends the request itself)
    browser.get(f"{server}{BOOKS}")
    browser.find_element(By.CSS_SELECTOR, 'a[name="raw-tab"][href="#post-generic-content-form"]').click()
    raw = browser.find_element(By.ID, "post-generic-content-form")
    content = raw.find_element(By.NAME, "_content")
    content.clear()
    content.send_keys(json.dumps({"title": f"{title}-raw", "author": "Ursula K. Le Guin"}))
    raw.find_element(By.CSS_SELECTOR, "button.btn-primary").click()

    # Then the script shows the 202 page in place of a reload, and the worker adds that book too
    raw_id = shown_answer(browser, "HTTP 202 Accepted")
    assert raw_id != message_id
    assert browser.current_url == f"{server}{BOOKS}"
    browser.find_element(By.CSS_SELECTOR, f'.response-info a[href*="/demo/messages/{raw_id}/"]')
    browser.save_screenshot(str(artifacts / "browsable-raw-form-202.png"))
    wait_for(lambda: Book.objects.filter(title=f"{title}-raw").exists(), timeout=60, what="the second book")

    # Given an input view whose DELETE validates a body, when the person fills in its DELETE form
    article = Article.objects.create(title="Dune")
    url = f"{server}/renamed-articles/{article.pk}/"
    browser.get(url)
    assert not browser.find_elements(By.ID, "deleteModal"), "DRF's bodiless DELETE button is replaced"
    section = browser.find_element(By.ID, "messenger-delete")
    assert "DELETE takes a body" in section.text
    section.find_element(By.CSS_SELECTOR, 'a[name="html-tab"]').click()
    delete_form = browser.find_element(By.ID, "delete-object-form")
    delete_form.find_element(By.NAME, "title").send_keys("gone")
    delete_form.find_element(By.CSS_SELECTOR, "button.btn-danger").click()

    # Then the page shows the 202 (not a 404 of a reload) and the worker handles the DTO
    delete_id = shown_answer(browser, "HTTP 202 Accepted")
    assert browser.current_url == url
    browser.save_screenshot(str(artifacts / "browsable-delete-with-body-202.png"))
    effect = wait_for(
        lambda: Effect.objects.filter(handler="rename_article", message_id=delete_id).first(),
        timeout=60,
        what="the worker to handle the DELETE's DTO",
    )
    assert effect.payload == {"title": "gone", "operation": "destroy"}
