"""Dramatiq's RabbitmqBroker, declaring quorum queues where a transport asks for them.

Dramatiq declares classic queues: a queue, its delay queue (``<queue>.DQ``) and its dead-letter
queue (``<queue>.XQ``), with the arguments of ``RabbitmqBroker._build_queue_arguments`` (the
dead-letter routing, ``x-max-priority``) and, for the dead letters, ``x-message-ttl``. A quorum
queue is a classic one declared with ``x-queue-type: quorum``; RabbitMQ's policies cannot set
the type, so it has to be among the arguments of every declaration, the workers' (Dramatiq's
own) and the web's (messenger's :class:`~django_messenger.publishing.ConfirmingPublisher`).

:func:`use_queue_types` makes an existing broker do so, with its class unchanged
(``DRAMATIQ_BROKER["BROKER"]`` stays ``dramatiq.brokers.rabbitmq.RabbitmqBroker``): it gives
the broker instance its own ``_build_queue_arguments`` and ``_declare_xq_queue``, which add
:func:`type_arguments` of the queue's type to Dramatiq's, and an ``_ensure_queue`` that
explains a refused declaration. The type of a queue comes from a function the caller passes
(the binding: the ``queue_type`` of the queue's transport, ``"classic"`` for a queue messenger
does not bind). :func:`queue_arguments` and :func:`dead_letter_arguments` are what both sides
declare, so that a worker's declarations and a web process's match exactly.

A quorum queue dead-letters *at least once* (``x-dead-letter-strategy``, which needs
``x-overflow: reject-publish``): a message moved to ``<queue>.XQ`` is removed from its queue only
once the dead-letter queue confirmed it, so not even a failed message is lost across a node
stop. Quorum queues need RabbitMQ 3.10 or later (message TTL of the dead-letter queue,
at-least-once dead-lettering) and take no priorities (``max_priority``): system check E014.

RabbitMQ refuses to declare an existing queue with another type (``PRECONDITION_FAILED -
inequivalent arg 'x-queue-type'``), and a queue's type never changes: :func:`explain_refusal`
turns that refusal into a sentence that says what to do (docs/transports.md, "Moving to quorum
queues").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from types import MethodType
from typing import Any

import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import q_name, xq_name
from dramatiq.errors import ConnectionClosed

__all__ = [
    "CLASSIC",
    "QUEUE_TYPES",
    "QUORUM",
    "dead_letter_arguments",
    "explain_refusal",
    "queue_arguments",
    "queue_type",
    "type_arguments",
    "use_queue_types",
]

logger = logging.getLogger("django_messenger")

CLASSIC = "classic"
QUORUM = "quorum"
#: The values of a transport's ``queue_type`` option.
QUEUE_TYPES = (CLASSIC, QUORUM)

#: RabbitMQ's reply code for a declaration that does not match the queue (or is not allowed).
PRECONDITION_FAILED = 406

#: The arguments a quorum queue (main, delay and dead-letter queue alike) is declared with.
_QUORUM_ARGUMENTS = {
    "x-queue-type": QUORUM,
    # A dead-lettered message leaves its queue only once the dead-letter queue has it.
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",  # what at-least-once dead-lettering requires
}

#: How RabbitMQ names the argument that differs, in a PRECONDITION_FAILED reply.
_INEQUIVALENT = re.compile(r"inequivalent arg '(?P<argument>[^']+)'")

#: The attribute of a broker instance that holds its queue-type function.
_ATTRIBUTE = "messenger_queue_type"


def type_arguments(queue_type: str) -> dict[str, Any]:
    """The declaration arguments that make a queue of ``queue_type`` (none for classic)."""
    if queue_type == QUORUM:
        return dict(_QUORUM_ARGUMENTS)
    if queue_type == CLASSIC:
        return {}
    raise ValueError(f"queue_type must be one of {', '.join(map(repr, QUEUE_TYPES))}, not {queue_type!r}.")


def queue_type(broker: Any, queue_name: str) -> str:
    """The type of ``queue_name``'s queues: ``"classic"`` unless :func:`use_queue_types` says otherwise."""
    type_of: Callable[[str], str] | None = getattr(broker, _ATTRIBUTE, None)
    return CLASSIC if type_of is None else type_of(q_name(queue_name))


def queue_arguments(broker: RabbitmqBroker, queue_name: str) -> dict[str, Any]:
    """The arguments of ``queue_name`` and of its delay queue: Dramatiq's, plus its type's."""
    arguments: dict[str, Any] = type(broker)._build_queue_arguments(broker, q_name(queue_name))
    # The dead-letter strategy applies only where there is a dead-letter target: always here.
    arguments.update(type_arguments(queue_type(broker, queue_name)))
    return arguments


def dead_letter_arguments(broker: RabbitmqBroker, queue_name: str) -> dict[str, Any]:
    """The arguments of ``queue_name``'s dead-letter queue: Dramatiq's TTL, and its type."""
    arguments: dict[str, Any] = {"x-message-ttl": DEAD_MESSAGE_TTL}
    if queue_type(broker, queue_name) == QUORUM:
        arguments["x-queue-type"] = QUORUM  # it dead-letters nowhere: no strategy to set
    return arguments


def explain_refusal(error: BaseException, queue_name: str, wanted: str) -> str | None:
    """A sentence for a declaration of ``queue_name``'s queues that RabbitMQ refused, or None.

    ``wanted`` is the type messenger declared. None when ``error`` is not such a refusal.
    """
    if not (
        isinstance(error, pika.exceptions.ChannelClosedByBroker) and error.reply_code == PRECONDITION_FAILED
    ):
        return None
    text = str(error.reply_text)
    canonical = q_name(queue_name)
    if _type_mismatch(text, wanted):
        existing = CLASSIC if wanted == QUORUM else QUORUM
        return (
            f"RabbitMQ refused to declare the queue {canonical!r} (or its .DQ/.XQ) as a {wanted} queue: it "
            f"already exists as a {existing} queue, and a queue's type never changes ({text}). Either set "
            f"the transport's queue_type back to {existing!r}, or move the queue: with nothing new sent, "
            f"let its workers drain it, stop them, delete {canonical!r}, {canonical + '.DQ'!r} and "
            f"{xq_name(canonical)!r}, and start them again (docs/transports.md, 'Moving to quorum queues')."
        )
    if "inequivalent arg" in text:
        return (
            f"RabbitMQ refused to declare the queue {canonical!r} (or its .DQ/.XQ): it exists with other "
            f"arguments than the {wanted} queue messenger declares ({text}). It was declared by something "
            f"else (another version, another tool, by hand): drain and delete it, and let the workers "
            f"declare it again (docs/transports.md, 'Moving to quorum queues')."
        )
    if "x-max-priority" in text:
        return (
            f"RabbitMQ refused to declare the queue {canonical!r} as a quorum queue with priorities "
            f"({text}): quorum queues take no max_priority. Remove max_priority from "
            f"DRAMATIQ_BROKER['OPTIONS'] (system check django_messenger.E014)."
        )
    return f"RabbitMQ refused to declare the queue {canonical!r} ({text})."


def _type_mismatch(reply_text: str, wanted: str) -> bool:
    """Whether RabbitMQ's refusal says the queue exists with the other type.

    RabbitMQ names the first argument that differs: for a classic queue declared as quorum that
    may be any argument only quorum queues have, which the existing queue has none of (and
    the other way round).
    """
    match = _INEQUIVALENT.search(reply_text)
    if match is None or match["argument"] not in _QUORUM_ARGUMENTS:
        return False
    if wanted == QUORUM:
        return reply_text.rstrip().endswith("current is none")
    return "received none" in reply_text


def use_queue_types(broker: RabbitmqBroker, type_of: Callable[[str], str]) -> None:
    """Make ``broker`` declare each queue with the type ``type_of(canonical_queue_name)`` gives.

    ``type_of`` is called at each declaration (settings may change, handlers come later), and
    returns ``"classic"`` or ``"quorum"`` (it raises for anything else: no queue is then declared
    with a type nobody asked for). Calling this again replaces the function.
    """
    setattr(broker, _ATTRIBUTE, type_of)
    if isinstance(broker.__dict__.get("_ensure_queue"), MethodType):
        return  # the declarations are already ours
    broker._build_queue_arguments = MethodType(_build_queue_arguments, broker)  # type: ignore[method-assign]
    broker._declare_xq_queue = MethodType(_declare_xq_queue, broker)  # type: ignore[method-assign]
    broker._ensure_queue = MethodType(_ensure_queue, broker)  # type: ignore[method-assign]


# The broker instance's own methods, once use_queue_types() ran: Dramatiq's, with the types.


def _build_queue_arguments(broker: RabbitmqBroker, queue_name: str) -> dict[str, Any]:
    return queue_arguments(broker, queue_name)


def _declare_xq_queue(broker: RabbitmqBroker, queue_name: str) -> Any:
    return broker.channel.queue_declare(
        queue=xq_name(queue_name), durable=True, arguments=dead_letter_arguments(broker, queue_name)
    )


def _ensure_queue(broker: RabbitmqBroker, canonical_queue_name: str) -> None:
    try:
        type(broker)._ensure_queue(broker, canonical_queue_name)
    except ConnectionClosed as exc:
        # Dramatiq wraps the channel error it could not get past (the refusal, twice) in ConnectionClosed.
        reason = explain_refusal(exc.message, canonical_queue_name, queue_type(broker, canonical_queue_name))
        if reason is None:
            raise
        logger.error("%s", reason)
        raise ConnectionClosed(reason) from exc
