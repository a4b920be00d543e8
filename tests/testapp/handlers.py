"""Handlers of the test app: each records what it did as an Effect row."""

from __future__ import annotations

import time

from django.db import transaction
from django.http import HttpResponse

from django_messenger import Envelope, handler
from django_messenger.stamps import OperationStamp, ReceivedStamp, RemoveStamp

from .messages import (
    Compute,
    Everything,
    Flaky,
    IdempotentWork,
    Ping,
    PlainGreeting,
    RenameArticle,
    Shout,
    Work,
)
from .models import Article, Effect

received: list[Envelope] = []


@handler
def handle(message: Ping, envelope: Envelope) -> str:
    received.append(envelope)
    Effect.objects.create(handler="ping", message_id=envelope.message_id, payload={"text": message.text})
    return message.text.upper()


@handler(queue_name="other")
def handle_everything(message: Everything, envelope: Envelope) -> None:
    received.append(envelope)


@handler
def shout_one(message: Shout, envelope: Envelope) -> None:
    Effect.objects.create(handler="shout_one", message_id=envelope.message_id, payload={"text": message.text})


@handler(Shout)
def shout_two(message, envelope):  # type: ignore[no-untyped-def]  # named type, no annotations
    Effect.objects.create(handler="shout_two", message_id=envelope.message_id, payload={"text": message.text})


@handler
def greet(message: PlainGreeting, envelope: Envelope) -> None:
    received.append(envelope)


@handler
def compute(message: Compute) -> object:
    if message.a < 0:
        return HttpResponse("negative", status=418)
    if message.a == 0:
        return None
    return Compute(a=message.a + message.b, b=0)


@handler
def save_article(message: Article, envelope: Envelope) -> None:
    received.append(envelope)
    operation = envelope.last(OperationStamp)
    if envelope.last(RemoveStamp) is not None:
        Article.objects.filter(pk=message.pk).delete()
    elif operation is not None and operation.operation == "partial_update":
        message.save(update_fields=list(operation.fields))
    else:
        message.save()


@handler
def rename_article(message: RenameArticle, envelope: Envelope) -> None:
    received.append(envelope)
    operation = envelope.last(OperationStamp)
    Effect.objects.create(
        handler="rename_article",
        message_id=envelope.message_id,
        payload={"title": message.title, "operation": operation.operation if operation else None},
    )


class NotFixedYet(RuntimeError):
    pass


@handler(max_retries=1, min_backoff=10, max_backoff=20)
def flaky(message: Flaky, envelope: Envelope) -> None:
    if not Effect.objects.filter(handler="fixed", payload__text=message.text).exists():
        received_stamp = envelope.last(ReceivedStamp)
        Effect.objects.create(
            handler="flaky-try",
            message_id=envelope.message_id,
            payload={"retries": received_stamp.retries if received_stamp is not None else None},
        )
        raise NotFixedYet(f"{message.text} is not fixed yet")
    Effect.objects.create(handler="flaky", message_id=envelope.message_id, payload={"text": message.text})


@handler
def work(message: Work, envelope: Envelope) -> None:
    if message.sleep_ms >= 1000:
        Effect.objects.create(
            handler="work-started", message_id=envelope.message_id, payload={"n": message.n}
        )
    time.sleep(message.sleep_ms / 1000)
    Effect.objects.create(handler="work", message_id=envelope.message_id, payload={"n": message.n})


@handler(idempotent=True)
def work_once(message: IdempotentWork, envelope: Envelope) -> None:
    """Exactly-once: its Effect row and the record of the message commit together."""
    time.sleep(message.sleep_ms / 1000)
    Effect.objects.create(handler="work_once", message_id=envelope.message_id, payload={"n": message.n})
    if message.hold_ms:
        # After the commit, before the worker acknowledges: the window a crash makes a redelivery of.
        transaction.on_commit(lambda: time.sleep(message.hold_ms / 1000))
