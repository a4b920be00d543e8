"""Forged messages published straight to a real worker's queue: poison, dead-lettered, the worker goes on.

Whoever can write to the queues can forge a message (docs/reliability.md: the broker's
access control is the trust boundary). What a forged message can do is bounded: values
must fit their fields, classes their annotations, a model's database is the router's,
and a body too large, too deep or built to flood a set's hash table is refused unread or
fast.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq import Message

from django_messenger.encoding import encode_envelope
from django_messenger.envelope import Envelope
from django_messenger.models import FailedMessage
from tests.testapp.messages import Ping, PlainGreeting
from tests.testapp.models import Article, Effect

from .processes import Process, start_worker, wait_for
from .rabbit import publish_raw, queue_bodies, queue_depth, send_good_message

pytestmark = pytest.mark.django_db(transaction=True)

PING = "tests.testapp.handlers.handle"
GREET = "tests.testapp.handlers.greet"
ARTICLE = "tests.testapp.handlers.save_article"
MERSENNE = 2**61 - 1


@pytest.fixture
def own_worker(own_queue: str, process_env: dict[str, str], log_dir: Any) -> Iterator[Process]:
    worker = start_worker(
        {**process_env, "MESSENGER_QUEUE": own_queue}, log_dir, queues=[own_queue], threads=2
    )
    yield worker
    worker.stop()


def body(queue: str, actor: str, payload: Any) -> bytes:
    message: Message[Any] = Message(
        queue_name=queue, actor_name=actor, args=(payload,), kwargs={}, options={}
    )
    return message.encode()


def ping_with_text(text: Any) -> dict[str, Any]:
    payload = encode_envelope(Envelope(Ping("forged")))
    payload["body"]["text"] = text
    return payload


def test_forged_messages_are_poison_and_the_worker_goes_on(own_queue: str, own_worker: Process) -> None:
    # Given an article, and a forged update of it that names another database
    article = Article.objects.create(title="before")
    saved = Article(pk=article.pk, title="renamed through the router's database")
    saved._state.adding = False
    forged_db = encode_envelope(Envelope(saved))
    forged_db["body"]["db"] = "elsewhere"
    greeting = encode_envelope(Envelope(PlainGreeting("Ada")))
    greeting["body"]["greet"] = "shadows the handler's view of the class"

    # and forged messages of every kind this worker must refuse
    poison = {
        "a number for a str field": body(own_queue, PING, ping_with_text(5)),
        "a registered class where a str is annotated": body(
            own_queue,
            PING,
            ping_with_text(
                {"$type": "object", "class": "testapp.Address", "$value": {"street": "a", "city": "b"}}
            ),
        ),
        "a plain class attribute it does not declare": body(own_queue, GREET, greeting),
        "a frozenset of 40,000 colliding ints": body(
            own_queue,
            PING,
            ping_with_text({"$type": "frozenset", "$value": [k * MERSENNE for k in range(1, 40_001)]}),
        ),
        "the same flood through the fan-out": body(
            own_queue,
            f"django_messenger.fanout.{own_queue}",
            ping_with_text({"$type": "set", "$value": [k * MERSENNE for k in range(1, 40_001)]}),
        ),
        "nesting 40 deep": body(own_queue, PING, ping_with_text(nested(40))),
        "a body of 3 MB, refused before it is parsed": b'{"args": ["' + b"x" * 3_000_000 + b'"]}',
    }
    started = time.monotonic()
    for raw in poison.values():
        publish_raw(own_queue, raw)
    publish_raw(own_queue, body(own_queue, ARTICLE, forged_db))

    # When a good message follows them
    good = send_good_message(own_queue, PING, Ping(text="after the forgeries"))

    # Then the good one is handled, soon
    wait_for(lambda: Effect.objects.filter(message_id=good.message_id).exists(), what="the good message")
    print(f"\nforged messages then a good one: handled after {time.monotonic() - started:.2f} s")
    # and the forged database was ignored: the update went to the router's database
    wait_for(lambda: Article.objects.get(pk=article.pk).title.startswith("renamed"), what="the routed update")
    # and every poison message was dead-lettered once, not retried
    wait_for(lambda: queue_depth(f"{own_queue}.XQ") == len(poison), what="every forged message dead-lettered")
    stored = wait_for(
        lambda: FailedMessage.objects.count() == len(poison) - 1 and list(FailedMessage.objects.all())
    )
    assert all(failed.tries == 1 for failed in stored)
    errors = "\n".join(failed.error for failed in stored)
    assert errors.count("Ping.text: Expected a str") == 2
    assert "has no attribute(s) ['greet']" in errors
    assert errors.count("share one hash value") == 2
    assert "deeper than 32 levels" in errors
    # and the oversized body was refused unread: dead-lettered as sent, with no failure stored for it
    # (a worker that had parsed it would have stored it as over MAX_MESSAGE_SIZE)
    assert poison["a body of 3 MB, refused before it is parsed"] in queue_bodies(f"{own_queue}.XQ")
    assert "MAX_MESSAGE_SIZE" not in errors


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value
