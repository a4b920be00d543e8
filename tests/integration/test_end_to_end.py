"""HTTP -> gunicorn -> RabbitMQ -> ``rundramatiq`` worker -> database, all real processes."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.testapp.models import Article, Effect

from .processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]


def post(url: str, json: dict[str, object]) -> requests.Response:
    return requests.post(url, json=json, timeout=15)


def test_a_plain_message_is_handled_by_the_worker(server):
    # Given a worker and a server on real RabbitMQ
    # When a command is POSTed
    response = post(f"{server}/pings/", {"text": "over the wire"})

    # Then the answer is an empty 202 whose id the handler sees
    assert response.status_code == 202
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"
    message_id = uuid.UUID(response.headers["Messenger-Message-Id"])
    effect = wait_for(lambda: Effect.objects.filter(message_id=message_id).first(), what="the ping's effect")
    assert effect.handler == "ping"
    assert effect.payload == {"text": "over the wire"}


def test_invalid_input_is_400_and_nothing_is_handled(server):
    response = post(f"{server}/pings/", {"text": ""})

    assert response.status_code == 400
    assert "text" in response.json()


def test_each_write_of_a_model_resource_is_applied_by_the_worker(server):
    # POST: the handler creates the row
    response = post(f"{server}/articles/", {"title": "Dune", "price": "9.99"})
    assert response.status_code == 202
    article = wait_for(lambda: Article.objects.filter(title="Dune").first(), what="the created article")
    assert str(article.price) == "9.99"

    # PUT: the handler saves the whole changed instance
    response = requests.put(f"{server}/articles/{article.pk}/", json={"title": "Dune Messiah"}, timeout=15)
    assert response.status_code == 202
    wait_for(lambda: Article.objects.filter(pk=article.pk, title="Dune Messiah").exists(), what="the PUT")

    # PATCH: the handler saves only the fields the request set
    response = requests.patch(f"{server}/articles/{article.pk}/", json={"body": "sand"}, timeout=15)
    assert response.status_code == 202
    wait_for(lambda: Article.objects.filter(pk=article.pk, body="sand").exists(), what="the PATCH")
    assert Article.objects.get(pk=article.pk).title == "Dune Messiah"

    # DELETE: the handler removes the row
    response = requests.delete(f"{server}/articles/{article.pk}/", timeout=15)
    assert response.status_code == 202
    wait_for(lambda: not Article.objects.filter(pk=article.pk).exists(), what="the DELETE")


def test_two_handlers_of_one_type_both_run(server):
    # Given Shout has two handlers (tests/testapp/handlers.py)
    # When a Shout is POSTed: one publish, fanned out in the worker
    response = post(f"{server}/shouts/", {"text": "everyone"})

    # Then each handler applied it once
    assert response.status_code == 202
    message_id = uuid.UUID(response.headers["Messenger-Message-Id"])
    wait_for(
        lambda: (
            set(Effect.objects.filter(message_id=message_id).values_list("handler", flat=True))
            == {"shout_one", "shout_two"}
        ),
        what="both handlers",
    )
    assert Effect.objects.filter(message_id=message_id).count() == 2


def test_a_delayed_message_is_handled_after_its_delay(server):
    response = post(f"{server}/delayed-pings/?delay_ms=1500", {"text": "later"})

    assert response.status_code == 202
    message_id = uuid.UUID(response.headers["Messenger-Message-Id"])
    assert not Effect.objects.filter(message_id=message_id).exists()
    wait_for(lambda: Effect.objects.filter(message_id=message_id).exists(), what="the delayed ping")
