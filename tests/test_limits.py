"""MAX_MESSAGE_SIZE on the web side: what a worker would refuse is a 413, never a 202 (StubBroker)."""

from __future__ import annotations

from typing import Any

import pytest

from django_messenger import bus
from django_messenger.exceptions import MessageTooLarge
from django_messenger.limits import check_envelope_size, envelope_size
from tests.conftest import queued
from tests.testapp.messages import Ping

pytestmark = pytest.mark.django_db

#: Costs 6 bytes in the ASCII-escaped JSON a worker measures ("\u20ac"), 3 in UTF-8.
EURO = "\N{EURO SIGN}"


def article_payload_size(api_client: Any, broker: Any, body: str, title: str = "t") -> int:
    """The size, as a worker measures it, of the envelope a POST of an article with ``body`` makes."""
    response = api_client.post("/articles/", {"title": title, "body": body}, format="json")
    assert response.status_code == 202, response.content
    [message] = queued(broker)
    broker.flush_all()
    return envelope_size(message.args[0])


def article_body_of_size(api_client: Any, broker: Any, size: int, title: str = "t") -> str:
    """An article body whose POST (with ``title``) makes an envelope of exactly ``size`` bytes."""
    base = article_payload_size(api_client, broker, "", title)
    euros, rest = divmod(size - base, 6)
    body = EURO * euros + "a" * rest
    assert article_payload_size(api_client, broker, body, title) == size
    return body


def test_a_post_a_worker_would_refuse_is_413_and_sends_nothing(api_client, broker):
    # Given the default limit (1 MiB) and 180,000 euro signs: 540 kB of UTF-8, well under
    # Django's 2.5 MiB, but 1,080,000 bytes once escaped as the worker measures it
    body = EURO * 180_000

    # When it is POSTed
    response = api_client.post("/articles/", {"title": "t", "body": body}, format="json")

    # Then the answer is a JSON 413 that says what to do, and nothing was sent
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "Send less data" in detail
    assert "1048576" in detail
    assert "MAX_MESSAGE_SIZE" not in detail
    assert queued(broker) == []


def test_the_view_accepts_what_a_worker_accepts_and_refuses_one_byte_more(api_client, broker, settings):
    # Given a limit, and a body whose envelope is exactly that large
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 4000}
    body = article_body_of_size(api_client, broker, 4000)

    # When it is POSTed, it is accepted, and the worker's own check lets it through
    response = api_client.post("/articles/", {"title": "t", "body": body}, format="json")
    assert response.status_code == 202
    [message] = queued(broker)
    check_envelope_size(message.args[0])
    broker.flush_all()

    # When one more (ASCII) byte is POSTed, it is refused before anything is sent
    response = api_client.post("/articles/", {"title": "t", "body": body + "a"}, format="json")
    assert response.status_code == 413
    assert "4001 bytes" in response.json()["detail"]
    assert queued(broker) == []


@pytest.mark.django_db(transaction=True)  # outside a transaction: the send is not deferred
def test_a_dispatch_from_code_raises_message_too_large_and_sends_nothing(broker, settings):
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 200}

    with pytest.raises(MessageTooLarge, match="MAX_MESSAGE_SIZE") as raised:
        bus.dispatch(Ping(EURO * 50))

    assert raised.value.limit == 200
    assert raised.value.size > 300
    assert queued(broker) == []


@pytest.mark.django_db(transaction=True)
def test_any_drf_view_that_dispatches_answers_413(api_client, broker, settings):
    # Given a hand-written APIView that calls bus.dispatch (no messenger mixin)
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 200}

    response = api_client.post("/delayed-pings/", {"text": EURO * 50}, format="json")

    assert response.status_code == 413
    assert response.json()["detail"]
    assert queued(broker) == []


@pytest.fixture
def size_checks(monkeypatch: Any) -> list[Any]:
    """The payloads the Dramatiq transport measures by encoding them (limits.check_envelope_size)."""
    from django_messenger.transports.dramatiq import transport

    measured: list[Any] = []

    def measure(payload: Any) -> None:
        measured.append(payload)
        check_envelope_size(payload)

    monkeypatch.setattr(transport, "check_envelope_size", measure)
    return measured


@pytest.fixture
def pickle_encoder() -> Any:
    """Dramatiq's PickleEncoder for the test: its bodies do not show how large an envelope measures."""
    import dramatiq
    from dramatiq.encoder import PickleEncoder

    before = dramatiq.get_encoder()
    dramatiq.set_encoder(PickleEncoder())
    yield
    dramatiq.set_encoder(before)


@pytest.mark.django_db(transaction=True)
def test_an_envelope_whose_body_is_within_the_limit_is_not_encoded_again_to_be_measured(broker, size_checks):
    # Given Dramatiq's JSON encoder: a body within the limit holds an envelope within it
    # When a small message is dispatched
    bus.dispatch(Ping("small"))
    # Then it is sent without a second encoding of its envelope
    assert size_checks == []
    assert len(queued(broker)) == 1


@pytest.mark.django_db(transaction=True)
def test_with_an_encoder_that_is_not_json_every_envelope_is_measured(
    broker, settings, size_checks, pickle_encoder
):
    # Given a Dramatiq encoder whose bodies are not the JSON a worker measures: pickle writes
    # 500 euro signs in about 1,800 bytes, the JSON a worker measures in about 3,100
    settings.MESSENGER = {**settings.MESSENGER, "MAX_MESSAGE_SIZE": 2500}
    # When a small message is dispatched, Then it is measured (its body is within the limit), and sent
    bus.dispatch(Ping("small"))
    assert len(size_checks) == 1
    assert len(queued(broker)) == 1
    broker.flush_all()
    # And one that is too large as a worker measures it is refused, though its body is within the limit
    with pytest.raises(MessageTooLarge):
        bus.dispatch(Ping(EURO * 500))
    assert queued(broker) == []
