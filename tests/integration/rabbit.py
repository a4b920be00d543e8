"""Publishing straight to RabbitMQ from a test, the way a web process would (or would not)."""

from __future__ import annotations

from typing import Any

import pika
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from django_messenger.encoding import encode_envelope
from django_messenger.envelope import Envelope

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672"


def envelope_message(queue_name: str, actor_name: str, message: Any) -> tuple[Envelope, Message[Any]]:
    """A Dramatiq message carrying ``message`` in messenger's wire format."""
    envelope = Envelope(message)
    dramatiq_message: Message[Any] = Message(
        queue_name=queue_name, actor_name=actor_name, args=(encode_envelope(envelope),), kwargs={}, options={}
    )
    return envelope, dramatiq_message


def confirming_broker(queue_name: str) -> RabbitmqBroker:
    """A RabbitMQ broker with publisher confirms that has ``queue_name`` declared as Dramatiq does."""
    broker = RabbitmqBroker(url=AMQP_URL, confirm_delivery=True, middleware=[])
    broker.declare_queue(queue_name)
    return broker


def send_good_message(queue_name: str, actor_name: str, message: Any) -> Envelope:
    """Enqueue ``message`` as messenger would (confirmed); return its envelope."""
    broker = confirming_broker(queue_name)
    try:
        envelope, dramatiq_message = envelope_message(queue_name, actor_name, message)
        broker.enqueue(dramatiq_message)
    finally:
        broker.close()
    return envelope


def publish_raw(queue_name: str, body: bytes) -> None:
    """Put ``body`` on ``queue_name`` as it is: no Dramatiq, no messenger."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue_name, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        connection.close()


def queue_bodies(queue_name: str) -> list[bytes]:
    """The bodies of the messages on ``queue_name``, read without taking them (they are requeued)."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        bodies = []
        while True:
            method, _, body = channel.basic_get(queue_name, auto_ack=False)
            if method is None:
                return bodies
            bodies.append(body)
    finally:
        connection.close()  # unacknowledged: RabbitMQ puts them back


def queue_depth(queue_name: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return int(connection.channel().queue_declare(queue_name, passive=True).method.message_count)
    finally:
        connection.close()
