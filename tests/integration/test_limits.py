"""MAX_MESSAGE_SIZE end to end: gunicorn and a ``rundramatiq`` worker on real RabbitMQ agree.

What the view accepts, a real worker handles; one byte more is a 413 from the view, so a
message the worker would dead-letter as poison is never answered 202.
"""

from __future__ import annotations

import pytest
import requests

from django_messenger.conf import messenger_settings
from tests.test_limits import article_body_of_size
from tests.testapp.models import Article

from .processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]


def test_a_message_at_the_limit_is_handled_and_one_byte_more_is_a_413(server, api_client, broker):
    # Given an article body, mostly euro signs (6 bytes each as the worker measures), whose
    # envelope is exactly the default MAX_MESSAGE_SIZE (1 MiB), measured in this process
    limit = messenger_settings.MAX_MESSAGE_SIZE
    body = article_body_of_size(api_client, broker, limit, title="at the limit")

    # When it is POSTed to a real server
    response = requests.post(f"{server}/articles/", json={"title": "at the limit", "body": body}, timeout=30)

    # Then it is accepted, and a real worker handles it
    assert response.status_code == 202, response.text
    article = wait_for(
        lambda: Article.objects.filter(title="at the limit").first(), what="the article at the limit"
    )
    assert article.body == body

    # When one more (ASCII) byte is POSTed
    response = requests.post(
        f"{server}/articles/", json={"title": "at the limit", "body": body + "a"}, timeout=30
    )

    # Then the view refuses it with a JSON 413 that says what to do
    assert response.status_code == 413, response.text
    assert f"{limit + 1} bytes" in response.json()["detail"]
    assert "Messenger-Message-Id" not in response.headers
