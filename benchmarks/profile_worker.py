"""Profile: what one message costs in a worker, in-process, without RabbitMQ's I/O.

Replays what Dramatiq's worker thread does with a delivered message (``Message.decode``, the
broker's ``before_process_message`` middleware, the actor, ``after_process_message``) for
messenger's no-op handler and for the hand-written no-op actor of the benchmark project
(same broker, same middleware list), and prints the median µs per message. ``--profile``
prints messenger's side under pyinstrument. Needs no running service.

    python -m benchmarks.profile_worker --profile
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

from benchmarks._common import median, print_table, run_main, spread


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print messenger's side under pyinstrument")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 200, 1
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.project.settings"
    import django

    django.setup()
    import dramatiq
    from dramatiq import Message

    from benchmarks.project.bench import tasks  # noqa: F401  (declares the hand-written actors)
    from benchmarks.project.bench.messages import Ping
    from django_messenger.encoding import encode_envelope
    from django_messenger.envelope import Envelope
    from django_messenger.locator import locator
    from django_messenger.transports.dramatiq.binding import binding

    broker = dramatiq.get_broker()
    handler_actor = binding.actor_of(locator.handlers_for(Ping)[0])
    raw_actor = broker.get_actor("bench.raw_noop")
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
    }

    def process(body: bytes) -> None:
        message = Message.decode(body)
        actor = broker.get_actor(message.actor_name)
        broker.emit_before("process_message", message)
        result = actor(*message.args, **message.kwargs)
        broker.emit_after("process_message", message, result=result)

    results: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for variant, body in bodies.items():
            t0 = time.perf_counter()
            for _ in range(args.messages):
                process(body)
            results[variant].append((time.perf_counter() - t0) / args.messages * 1e6)
    base = median(results["dramatiq"])
    print_table(
        f"In-process worker path, µs per message (median of {args.rounds})",
        ["variant", "µs/message", "min–max", "vs dramatiq"],
        [
            [v, f"{median(r):.1f}", spread(r, "{:.1f}"), f"{median(r) - base:+.1f}"]
            for v, r in results.items()
        ],
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
