"""The web side decodes what it publishes as a worker will: never a 202 for a message a worker refuses."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import transaction
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from django_messenger import bus
from django_messenger.exceptions import MessageNotDeliverable
from django_messenger.viewsets import MessengerViewSet
from tests.conftest import queued
from tests.testapp.messages import Ping
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db


class NullablePingSerializer(serializers.Serializer):  # type: ignore[type-arg]
    # The serializer lets null through, while Ping.text is annotated `str`: a worker would refuse it
    text = serializers.CharField(allow_null=True)


class NullablePingViewSet(MessengerViewSet):
    serializer_class = NullablePingSerializer
    message_class = Ping


def test_a_value_a_worker_would_refuse_is_a_400_and_sends_nothing(broker: Any, caplog: Any) -> None:
    # Given a view whose serializer accepts a value that does not fit the message's annotation
    view = NullablePingViewSet.as_view({"post": "create"})

    # When a client posts it
    response = view(APIRequestFactory().post("/", {"text": None}, format="json"))

    # Then the answer is a JSON 400 that names no class or Python text, nothing is queued,
    # and the log says what a worker would have said
    assert response.status_code == 400
    assert response.data["detail"].code == "message_not_deliverable"
    assert "Ping" not in str(response.data) and "NoneType" not in str(response.data)
    assert queued(broker) == []
    assert "a worker would refuse it" in caplog.text and "Ping.text" in caplog.text


def test_the_same_view_dispatches_a_value_that_fits(broker: Any) -> None:
    view = NullablePingViewSet.as_view({"post": "create"})

    response = view(APIRequestFactory().post("/", {"text": "hello"}, format="json"))

    assert response.status_code == 202
    assert len(queued(broker)) == 1


def test_a_dispatch_from_code_raises_and_sends_nothing(broker: Any) -> None:
    # Given a message whose value does not fit its field's annotation
    with pytest.raises(MessageNotDeliverable) as raised:
        bus.dispatch(Ping(text=42), on_commit=False)  # type: ignore[arg-type]

    # Then nothing was sent, and the reason names the field
    assert "Ping.text" in str(raised.value)
    assert queued(broker) == []


def test_inside_a_transaction_a_message_no_worker_accepts_fails_before_the_commit(broker: Any) -> None:
    # Given a transaction that writes a row, then dispatches a message a worker would refuse
    with pytest.raises(MessageNotDeliverable), transaction.atomic():
        Effect.objects.create(handler="before", message_id=uuid.uuid4())
        bus.dispatch(Ping(text=42))  # type: ignore[arg-type]

    # Then the error came inside the block: the row rolled back with it, and nothing was sent
    assert not Effect.objects.filter(handler="before").exists()
    assert queued(broker) == []
