"""The reader of Dramatiq's RabbitmqBroker: AMQP passive declares, or the management API.

Dramatiq declares three queues a queue: ``<queue>``, its delay queue ``<queue>.DQ`` (a worker
takes delayed messages from it and holds them, unacknowledged, until they are due) and its
dead letters ``<queue>.XQ``.

* **AMQP** (always): a passive ``queue.declare`` of each, on a connection of its own whose every
  step ends within the timeout, answers the number of messages *ready* on it. RabbitMQ does not
  tell over AMQP how many are unacknowledged, so *in flight* is unknown (``None``) and *delayed*
  counts only the delayed messages no worker holds yet. A queue that does not exist is not
  created: it is reported with zeros and a note.
* **The management API**, when ``MESSENGER["RABBITMQ_MANAGEMENT_URL"]`` names it (the
  ``rabbitmq_management`` plugin, ``http://127.0.0.1:15672`` by default): one ``GET
  /api/queues/<vhost>`` gives ready and unacknowledged counts, so *in flight* is the queue's
  unacknowledged messages and *delayed* every message of ``.DQ``. The management API's
  statistics lag by up to its collection interval (5 s by default). The credentials are the
  URL's, or else the broker's own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import pika
import pika.exceptions
from dramatiq.common import dq_name, xq_name

from ..conf import messenger_settings
from ..publishing.rabbitmq import bounded_parameters, deadline
from . import QueueStats, StatsUnavailable

#: The note of counts read over AMQP.
AMQP_NOTE = (
    "in flight unknown over AMQP (set RABBITMQ_MANAGEMENT_URL); delayed counts only those no worker holds"
)
MISSING_NOTE = "not declared on the broker"


def read(broker: Any, queues: Sequence[str], *, timeout: float) -> list[QueueStats]:
    management_url = messenger_settings.RABBITMQ_MANAGEMENT_URL
    if management_url:
        return read_management_api(broker, queues, management_url, timeout=timeout)
    return read_amqp(broker, queues, timeout=timeout)


def _parameters(broker: Any) -> list[pika.connection.Parameters]:
    parameters = broker.parameters
    return list(parameters) if isinstance(parameters, Sequence) else [parameters]


# -- AMQP ------------------------------------------------------------------------------------------


def read_amqp(broker: Any, queues: Sequence[str], *, timeout: float) -> list[QueueStats]:
    hosts = _parameters(broker)
    bounded = [
        bounded_parameters(p, connect_timeout=timeout / len(hosts), blocked_timeout=timeout) for p in hosts
    ]
    try:
        connection = pika.BlockingConnection(bounded)
    except (pika.exceptions.AMQPError, OSError) as exc:
        # pika's texts may name the host: only the kind of error is shown.
        raise StatsUnavailable(f"RabbitMQ could not be reached ({type(exc).__name__}).") from exc
    try:
        with deadline(connection, timeout, "the stats took longer than their timeout"):
            counts = _declare_passively(
                connection, [name for q in queues for name in (q, dq_name(q), xq_name(q))]
            )
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise StatsUnavailable(f"RabbitMQ did not answer in time ({type(exc).__name__}).") from exc
    finally:
        if connection.is_open:
            with (
                contextlib.suppress(pika.exceptions.AMQPError, OSError),
                deadline(connection, 1.0, "closing"),
            ):
                connection.close()
    stats = []
    for name in queues:
        ready, delayed, dead = counts[name], counts[dq_name(name)], counts[xq_name(name)]
        notes = [AMQP_NOTE] if ready is not None else [MISSING_NOTE]
        stats.append(
            QueueStats(
                queue=name,
                ready=ready or 0,
                in_flight=None,
                delayed=delayed or 0,
                dead_lettered=dead or 0,
                notes=tuple(notes),
            )
        )
    return stats


def _declare_passively(connection: pika.BlockingConnection, names: Sequence[str]) -> dict[str, int | None]:
    """The ready count of each queue; None for a queue that does not exist (404 closes the channel)."""
    counts: dict[str, int | None] = {}
    channel = connection.channel()
    for name in names:
        try:
            counts[name] = int(channel.queue_declare(name, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            counts[name] = None
            channel = connection.channel()
    if channel.is_open:
        channel.close()
    return counts


# -- the management API ----------------------------------------------------------------------------


def read_management_api(broker: Any, queues: Sequence[str], url: str, *, timeout: float) -> list[QueueStats]:
    by_name = _management_queues(broker, url, timeout=timeout)
    stats = []
    for name in queues:
        queue, delay, dead = by_name.get(name), by_name.get(dq_name(name)), by_name.get(xq_name(name))
        if queue is None:
            stats.append(QueueStats(name, 0, 0, _total(delay), _total(dead), notes=(MISSING_NOTE,)))
            continue
        ready, unacked = queue.get("messages_ready"), queue.get("messages_unacknowledged")
        notes = () if ready is not None else ("the management API has no statistics for it yet",)
        stats.append(
            QueueStats(
                queue=name,
                ready=None if ready is None else int(ready),
                in_flight=None if unacked is None else int(unacked),
                delayed=_total(delay),
                dead_lettered=_total(dead),
                notes=notes,
            )
        )
    return stats


def _total(queue: Mapping[str, Any] | None) -> int | None:
    """Every message of ``queue`` (ready and unacknowledged); 0 when it does not exist."""
    if queue is None:
        return 0
    total = queue.get("messages")
    return None if total is None else int(total)


def management_request(broker: Any, url: str) -> urllib.request.Request:
    """The request of ``GET /api/queues/<vhost>`` on the management API at ``url``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise StatsUnavailable("MESSENGER['RABBITMQ_MANAGEMENT_URL'] is not an http(s) URL.")
    first = _parameters(broker)[0]
    if parsed.username is not None:
        username, password = (
            urllib.parse.unquote(parsed.username),
            urllib.parse.unquote(parsed.password or ""),
        )
    else:
        username, password = first.credentials.username, first.credentials.password
    netloc = parsed.netloc.rpartition("@")[2]  # the credentials go in the Authorization header
    vhost = urllib.parse.quote(first.virtual_host, safe="")
    path = parsed.path.rstrip("/") + f"/api/queues/{vhost}"
    query = "columns=name,messages,messages_ready,messages_unacknowledged"
    request = urllib.request.Request(urllib.parse.urlunsplit((parsed.scheme, netloc, path, query, "")))
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Accept", "application/json")
    return request


def _management_queues(broker: Any, url: str, *, timeout: float) -> dict[str, Mapping[str, Any]]:
    request = management_request(broker, url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only)
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise StatsUnavailable(f"The RabbitMQ management API answered HTTP {exc.code}.") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StatsUnavailable(f"The RabbitMQ management API did not answer ({type(exc).__name__}).") from exc
    if not isinstance(body, list):
        raise StatsUnavailable("The RabbitMQ management API answered something other than a list of queues.")
    return {str(queue["name"]): queue for queue in body if isinstance(queue, dict) and "name" in queue}
