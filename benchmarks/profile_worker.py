"""Profile: what one message costs in a worker, in-process, without RabbitMQ's I/O.

Replays what Dramatiq's worker thread does with a delivered message (``Message.decode``, the
broker's ``before_process_message`` middleware, the actor, ``after_process_message``) and prints
the median µs per message of three variants, the in-process counterparts of
``benchmarks.worker``'s:

  messenger  messenger's no-op handler on the project's broker (the middleware django-dramatiq
             and messenger put there: DbConnections, CurrentMessage, MessengerMiddleware,
             RetryGuard, DelayHopMiddleware)
  dramatiq   the hand-written no-op actor on that same broker (same middleware)
  plain      the same actor on a broker with ``benchmarks.raw_actor``'s middleware (Dramatiq's
             own only, no Django): what the worker benchmark's target compares messenger with

``messenger - dramatiq`` is what the handler path costs (envelope decoding, the handler call);
``dramatiq - plain`` what the middleware costs. ``--calls`` counts Python function calls per
message, and what issue 11's pieces cost a messenger message when they are off (the look for
a TrackStamp). ``--profile`` prints messenger's side under pyinstrument. Needs no running
service (no message is sent).

    python -m benchmarks.profile_worker --profile
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from typing import Any

from benchmarks._common import call_rows, gate_call_rows, median, print_table, run_main, spread

#: What an untracked message of a handler that is not idempotent costs issue 11's pieces: the
#: look for its TrackStamp (``idempotent`` is an attribute test in the actor, no call).
GATES = [("django_messenger/tracking.py", "track_stamp")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print messenger's side under pyinstrument")
    parser.add_argument(
        "--calls",
        action="store_true",
        help="also count the Python function calls per message (cProfile): a measure load does not change",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 200, 1
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.project.settings"
    import django

    django.setup()
    import dramatiq
    from dramatiq import Message
    from dramatiq.broker import MessageProxy
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.middleware import AgeLimit, Callbacks, Retries, TimeLimit

    from benchmarks.project.bench import tasks  # noqa: F401  (declares the hand-written actors)
    from benchmarks.project.bench.messages import Ping
    from django_messenger.encoding import encode_envelope
    from django_messenger.envelope import Envelope
    from django_messenger.locator import locator
    from django_messenger.transports.dramatiq.binding import binding

    broker = dramatiq.get_broker()
    handler_actor = binding.actor_of(locator.handlers_for(Ping)[0])
    raw_actor = broker.get_actor("bench.raw_noop")
    # benchmarks/raw_actor.py's broker and actor, built here without connecting (no message is sent)
    plain_broker = RabbitmqBroker(
        url="amqp://127.0.0.1:5672", middleware=[AgeLimit(), TimeLimit(), Callbacks(), Retries()]
    )
    dramatiq.actor(
        raw_actor.fn, broker=plain_broker, actor_name="bench.plain_noop", queue_name="q", **raw_actor.options
    )
    dramatiq.set_broker(broker)  # declaring on another broker does not change the global one
    bodies = {
        "messenger": Message(
            queue_name="q",
            actor_name=handler_actor.actor_name,
            args=(encode_envelope(Envelope(Ping(name="ada", count=3))),),
            kwargs={},
            options={},
        ).encode(),
        "dramatiq": Message(
            queue_name="q",
            actor_name=raw_actor.actor_name,
            args=(),
            kwargs={"name": "ada", "count": 3},
            options={},
        ).encode(),
        "plain": Message(
            queue_name="q",
            actor_name="bench.plain_noop",
            args=(),
            kwargs={"name": "ada", "count": 3},
            options={},
        ).encode(),
    }
    brokers = {"messenger": broker, "dramatiq": broker, "plain": plain_broker}

    def process(body: bytes, broker: Any = broker) -> None:
        # What dramatiq.worker does for each message: the consumer decodes it into a MessageProxy,
        # a worker thread runs the middleware and the actor (CurrentMessage needs the proxy).
        message = MessageProxy(Message.decode(body))
        actor = broker.get_actor(message.actor_name)
        broker.emit_before("process_message", message)
        result = actor(*message.args, **message.kwargs)
        broker.emit_after("process_message", message, result=result)

    results: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for variant, body in bodies.items():
            t0 = time.perf_counter()
            variant_broker = brokers[variant]
            for _ in range(args.messages):
                process(body, variant_broker)
            results[variant].append((time.perf_counter() - t0) / args.messages * 1e6)
    base, plain = median(results["dramatiq"]), median(results["plain"])
    print_table(
        f"In-process worker path, µs per message (median of {args.rounds})",
        ["variant", "µs/message", "min–max", "vs dramatiq", "vs plain"],
        [
            [
                v,
                f"{median(r):.1f}",
                spread(r, "{:.1f}"),
                f"{median(r) - base:+.1f}",
                f"{median(r) - plain:+.1f}",
            ]
            for v, r in results.items()
        ],
    )
    if args.calls:
        print_table(
            "Python function calls per message (cProfile's count)",
            ["variant", "calls/message", "vs messenger"],
            call_rows(list(bodies), lambda variant: process(bodies[variant], brokers[variant]), 2000),
        )
        print_table(
            "Issue 11's pieces when off: Python function calls per untracked messenger message",
            ["gate", "calls of it", "calls inside it"],
            gate_call_rows(lambda: process(bodies["messenger"]), 2000, GATES),
        )
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0001)
        with profiler:
            for _ in range(args.messages):
                process(bodies["messenger"])
        print(profiler.output_text(unicode=True, color=False, show_all=False))


if __name__ == "__main__":
    run_main(main)
