"""Dramatiq's RedisBroker, whose workers dead-letter a body they cannot decode.

Dramatiq's Redis consumer raises when a body on the queue is not a message (bytes that are
not JSON, say, or a body ``BoundedJSONEncoder`` refuses to parse for its size): the worker
logs it and restarts the consumer, and the body stays among the messages the worker fetched
but never acknowledged. Nothing acknowledges or dead-letters it; when the worker stops,
Redis's maintenance puts it back on the queue for the next worker to stumble on. RabbitMQ's
consumer dead-letters such a body at once.

:class:`RedisBroker` is Dramatiq's, with a consumer that does what RabbitMQ's does: it finds
the body among the worker's unacknowledged messages and nacks it, which moves it to the
queue's dead letters (``<queue>.XQ``), bytes unchanged; then it goes on with the next message.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from dramatiq.brokers import redis as dramatiq_redis
from dramatiq.errors import ConnectionClosed, DecodeError

__all__ = ["RedisBroker"]

logger = logging.getLogger("django_messenger")


class RedisConsumer(dramatiq_redis._RedisConsumer):
    """Dramatiq's Redis consumer, dead-lettering what it cannot decode instead of raising."""

    def __next__(self) -> Any:
        while True:
            try:
                return super().__next__()
            except DecodeError as error:
                try:
                    self.dead_letter_undecodable(error)
                except redis.ConnectionError as exc:  # as Dramatiq's consumer: the worker reconnects
                    raise ConnectionClosed(exc) from None

    def dead_letter_undecodable(self, error: DecodeError) -> None:
        """Nack the fetched, unacknowledged message whose body is ``error.data``."""
        broker = self.broker
        client = broker.client
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{self.queue_name}"
        bodies = f"{broker.namespace}:{self.queue_name}.msgs"
        for redis_message_id in client.smembers(acks):
            if client.hget(bodies, redis_message_id) == error.data:
                broker.do_nack(self.queue_name, redis_message_id)
                logger.error(
                    "A body of %d bytes on the queue %r is not a message (%s): dead-lettered.",
                    len(error.data or b""),
                    self.queue_name,
                    error.error,
                )
                return
        logger.error(
            "A body on the queue %r is not a message (%s), and was not found to dead-letter.",
            self.queue_name,
            error.error,
        )


class RedisBroker(dramatiq_redis.RedisBroker):
    """Dramatiq's RedisBroker (same options), whose consumers dead-letter undecodable bodies."""

    @property
    def consumer_class(self) -> type[RedisConsumer]:
        return RedisConsumer
