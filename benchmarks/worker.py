"""Worker: messages/s drained from a broker, and the RSS of each worker process.

N no-op messages (default 20,000) are published to a queue nobody consumes, then a worker
is started on it and the drain is timed. The variants, all on the same broker (``--broker``:
``rabbitmq``, the default, ``redis``, ``sqs`` or ``postgres``; see ``benchmarks/brokers.py``)
with the same broker settings, Dramatiq middleware list and ``--processes P --threads T``:

  messenger        ``rundramatiq`` of the benchmark project, messenger's no-op handler
  actor            ``rundramatiq`` of the same project (django_messenger installed, so the
                   same middleware), a plain Dramatiq no-op actor: issue 8's baseline, "a plain
                   Dramatiq actor of the same project under ``rundramatiq``"
  dramatiq         the plain ``dramatiq`` CLI on ``benchmarks.raw_actor`` (one no-op actor,
                   no Django: the same middleware minus django-dramatiq's DbConnections)
  django-dramatiq  ``rundramatiq`` of the same project without django_messenger in
                   INSTALLED_APPS, the same no-op actor: the RSS baseline
  celery           ``celery worker -P prefork -c P`` on the same RabbitMQ (optional; RabbitMQ only)

Issue 11's pieces when on (not in the default ``--variants``; ``--variants
messenger,messenger-tracked,messenger-idempotent`` runs them against ``messenger``):

  messenger-tracked     ``messenger``, every message with a TrackStamp (as a tracked view sends
                        it): the worker records each handler's outcome in a status row
                        (``SELECT … FOR UPDATE`` and an insert or update, one transaction)
  messenger-idempotent  a no-op handler declared ``@handler(idempotent=True)``: a record row per
                        message, in one transaction with the (empty) handler

Both keep their rows in PostgreSQL (127.0.0.1:5432 or ``BENCH_PG_*``; persistent connections):
a database of the run's own, created, migrated and dropped like ``http_dispatch``'s (g); not
SQLite under 16 threads. After the run the script says how many rows each wrote, against the
messages it drained. ``messenger`` itself touches no database: an untracked message costs the
worker a look at its stamps.

Timing excludes start-up: the clock starts at the first queue-depth poll after every worker
process said it was ready and stops when the queue is empty; the rate is the messages left at
the start divided by that time (in flight at the end: at most P x T x 2 prefetched messages).
CPU µs/msg is the user + system time every process of the worker (parent and children, all
threads) spent over the same span, from /proc, divided by the same message count: what a message
costs the worker whatever else the machine runs, where a rate on a shared machine also measures
the others. RSS is VmRSS of each worker process (not the parent) read from /proc once the queue
is empty.
Rounds are interleaved (the order rotates); the table shows medians and min–max.

    python -m benchmarks.worker               # 20,000 messages, 3 rounds: ~2 minutes
    python -m benchmarks.worker --quick       # 500 messages, 1 round
    python -m benchmarks.worker --broker redis
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks._common import (
    BIN,
    PYTHON,
    Process,
    amqp_channel,
    bench_env,
    children,
    count_rows,
    cpu_seconds,
    create_database,
    drop_database,
    machine_info,
    median,
    new_prefix,
    pg_env,
    print_table,
    queue_depth,
    ratio_band,
    rss_mib,
    run_main,
    spread,
    start,
    stop_all,
    verdict,
    wait_for,
    write_summary,
)
from benchmarks.brokers import BROKERS, DEFAULT, BenchBroker


@dataclass
class Drain:
    rate: float
    measured: int
    #: CPU time (user + system) the worker's processes spent per drained message, in µs
    cpu_us: float
    worker_rss: list[float]
    main_rss: float | None


def drain(
    broker: BenchBroker, worker: Process, queue: str, ready: Callable[[str], bool], timeout: float
) -> Drain:
    """Time the worker's drain of ``queue`` from the moment every process is ready."""
    wait_for(lambda: (worker.check_alive(), ready(worker.log()))[1], timeout=90, what=f"{worker.name} ready")
    pids = [worker.pid, *children(worker.pid)]
    t_start, cpu_start, left = time.perf_counter(), cpu_seconds(pids), broker.depth(queue)
    deadline = t_start + timeout
    while True:
        depth = broker.depth(queue)
        now = time.perf_counter()
        if depth == 0:
            break
        if now > deadline:
            raise RuntimeError(f"{worker.name} did not drain {queue} in {timeout} s ({depth} left).")
        time.sleep(0.01)
    elapsed = now - t_start
    cpu = cpu_seconds(pids) - cpu_start
    time.sleep(0.2)  # the last prefetched messages
    rss = [value for value in (rss_mib(pid) for pid in children(worker.pid)) if value is not None]
    return Drain(
        rate=left / elapsed if left else float("nan"),
        measured=left,
        cpu_us=cpu / left * 1e6 if left else float("nan"),
        worker_rss=rss,
        main_rss=rss_mib(worker.pid),
    )


#: Issue 11's worker variants: which piece each turns on, and the table of its rows.
PIECES = {"messenger-tracked": "tracked", "messenger-idempotent": "idempotent"}
ROW_TABLES = {"tracked": "django_messenger_messagestatus", "idempotent": "django_messenger_handledmessage"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--variants", default="messenger,actor,dramatiq,django-dramatiq,celery")
    parser.add_argument("--broker", choices=list(BROKERS), default=DEFAULT, help="default: %(default)s")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 messages, 1 round, 1 x 4")
    parser.add_argument("--summary", metavar="FILE", help="also write the target ratios to FILE as JSON")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds, args.processes, args.threads = 500, 1, 1, 4

    prefix = new_prefix()
    bench_broker = BROKERS[args.broker](prefix)
    bench_broker.require()
    os.environ["BENCH_PREFIX"] = prefix
    os.environ["BENCH_BROKER"] = args.broker
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.project.settings"
    import django

    django.setup()
    from django.conf import settings
    from dramatiq import Message

    from benchmarks.project.bench.handlers import handle_ping
    from benchmarks.project.bench.messages import OncePing, Ping
    from django_messenger.encoding import encode_envelope
    from django_messenger.envelope import Envelope
    from django_messenger.locator import locator
    from django_messenger.stamps import TrackStamp
    from django_messenger.transports.dramatiq.binding import binding

    handler_actor = binding.actor_of(locator.handlers_for(Ping)[0])
    assert handler_actor.fn.__name__ == handle_ping.__name__
    once_handler = locator.handlers_for(OncePing)[0]
    assert once_handler.idempotent is True
    once_actor = binding.actor_of(once_handler)
    plain_queue = f"{prefix}-plain"
    messenger_queue, raw_queue = settings.MESSENGER_QUEUE, settings.RAW_QUEUE

    def messenger_messages(n: int, piece: str = "") -> Iterator[Message[Any]]:
        """Messenger's messages; ``piece``: ``tracked`` (a TrackStamp) or ``idempotent`` (OncePing)."""
        actor = once_actor if piece == "idempotent" else handler_actor
        for i in range(n):
            if piece == "idempotent":
                envelope = Envelope(OncePing(name="ada", count=i))
            elif piece == "tracked":  # what a tracked view sends for an anonymous user
                envelope = Envelope(Ping(name="ada", count=i), stamps=(TrackStamp(owner="", handlers=1),))
            else:
                envelope = Envelope(Ping(name="ada", count=i))
            yield Message(
                queue_name=messenger_queue,
                actor_name=actor.actor_name,
                args=(encode_envelope(envelope),),
                kwargs={},
                options={},
            )

    def raw_messages(queue: str, n: int) -> Iterator[Message[Any]]:
        for i in range(n):
            yield Message(
                queue_name=queue,
                actor_name="bench.raw_noop",
                args=(),
                kwargs={"name": "ada", "count": i},
                options={},
            )

    pt = ["--processes", str(args.processes), "--threads", str(args.threads)]
    dramatiq_ready = lambda log: log.count("Worker process is ready for action.") >= args.processes  # noqa: E731
    env = bench_env(prefix, BENCH_BROKER=args.broker, **bench_broker.env())
    notes: list[str] = []
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    celery_app: Any = None
    if "celery" in variants and args.broker != "rabbitmq":
        variants.remove("celery")
        notes.append(f"celery skipped: the Celery variant runs on RabbitMQ only (not {args.broker}).")
    pieces = [v for v in variants if v in PIECES]
    if pieces and args.broker == "postgres":
        variants = [v for v in variants if v not in PIECES]
        notes.append(
            f"{', '.join(pieces)} skipped: on postgres the project's database is the broker's (its schema); "
            "run them on another broker."
        )
        pieces = []
    pieces_db = prefix.replace("-", "_") + "_pieces"
    pieces_env = {**env, "BENCH_DB": pieces_db, **pg_env()}
    rows_written: dict[str, int] = defaultdict(int)
    drained: dict[str, int] = defaultdict(int)
    if "celery" in variants:
        try:
            from benchmarks.project import celery_app
        except ImportError:
            variants.remove("celery")
            notes.append("celery skipped: celery is not installed (pip install -e '.[bench]').")

    def rundramatiq(queue: str) -> list[str]:
        return [PYTHON, "-m", "benchmarks.project.manage", "rundramatiq", *pt, "--queues", queue]

    def run(variant: str) -> Drain:
        n = args.messages
        if variant == "messenger" or variant in PIECES:
            bench_broker.publish(messenger_queue, messenger_messages(n, PIECES.get(variant, "")), n)
            variant_env = env if variant == "messenger" else pieces_env
            worker = start(f"rundramatiq-{variant}", rundramatiq(messenger_queue), variant_env)
            queue, ready = messenger_queue, dramatiq_ready
        elif variant == "dramatiq":
            bench_broker.publish(plain_queue, raw_messages(plain_queue, n), n)
            argv = [str(BIN / "dramatiq"), "benchmarks.raw_actor", *pt, "--queues", plain_queue]
            worker = start("dramatiq-plain", argv, {**env, "BENCH_PLAIN_QUEUE": plain_queue})
            queue, ready = plain_queue, dramatiq_ready
        elif variant in ("actor", "django-dramatiq"):
            # The same plain actor under rundramatiq: in the same project (actor), or in the
            # project without django_messenger (django-dramatiq)
            bench_broker.publish(raw_queue, raw_messages(raw_queue, n), n)
            variant_env = env if variant == "actor" else {**env, "BENCH_MESSENGER": "0"}
            worker = start(f"rundramatiq-{variant}", rundramatiq(raw_queue), variant_env)
            queue, ready = raw_queue, dramatiq_ready
        elif variant == "celery":
            with celery_app.app.producer_or_acquire() as producer:
                for i in range(args.messages):
                    celery_app.noop.apply_async(kwargs={"name": "ada", "count": i}, producer=producer)
            connection, channel = amqp_channel()
            try:
                wait_for(
                    lambda: queue_depth(channel, celery_app.QUEUE) >= args.messages,
                    timeout=60,
                    what="celery messages",
                )
            finally:
                connection.close()
            argv = [
                str(BIN / "celery"),
                "-A",
                "benchmarks.project.celery_app",
                "worker",
                "-P",
                "prefork",
                "-c",
                str(args.processes),
                "-Q",
                celery_app.QUEUE,
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
            worker, queue, ready = start("celery", argv, env), celery_app.QUEUE, lambda log: " ready." in log
        else:
            raise SystemExit(f"Unknown variant {variant!r}.")
        try:
            return drain(
                bench_broker,
                worker,
                queue,
                ready,
                timeout=max(60.0, args.messages / bench_broker.slowest_rate),
            )
        finally:
            worker.stop()
            if variant in PIECES:
                drained[variant] += n
                rows_written[variant] = count_rows(pieces_db, pieces_env, ROW_TABLES[PIECES[variant]])

    print(f"Machine: {machine_info(f'{bench_broker.server} {bench_broker.version()}')}")
    print(
        f"Broker {args.broker}: {args.messages:,} no-op messages, "
        f"{args.processes} processes x {args.threads} threads "
        f"(celery: prefork -c {args.processes}), {args.rounds} interleaved rounds"
    )
    results: dict[str, list[Drain]] = defaultdict(list)
    try:
        if pieces:
            create_database(pieces_db, pieces_env)
        for round_index in range(args.rounds):
            shift = round_index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                results[variant].append(run(variant))
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    finally:
        stop_all()
        queues = [messenger_queue, raw_queue, plain_queue]
        exchanges = []
        if celery_app is not None:
            queues.append(celery_app.QUEUE)
            exchanges.append(celery_app.QUEUE)
        bench_broker.cleanup(queues, exchanges)
        bench_broker.close()
        if pieces:
            drop_database(pieces_db, pieces_env)

    rows = []
    for variant in variants:
        drains = results[variant]
        rates = [d.rate for d in drains]
        cpu = [d.cpu_us for d in drains]
        rss = [value for d in drains for value in d.worker_rss]
        mains = [d.main_rss for d in drains if d.main_rss is not None]
        rows.append(
            [
                variant,
                f"{median(rates):,.0f}",
                spread(rates),
                f"{median([d.measured for d in drains]):,.0f}",
                f"{median(cpu):,.0f}",
                spread(cpu, "{:,.0f}"),
                f"{median(rss):.1f}" if rss else "-",
                spread(rss, "{:.1f}"),
                f"{median(mains):.1f}" if mains else "-",
            ]
        )
    print_table(
        f"Worker drain on {args.broker}: messages/s, the workers' CPU time per message and RSS "
        f"per worker process (MiB), median of {args.rounds}",
        [
            "variant",
            "msg/s",
            "min–max",
            "msgs timed",
            "CPU µs/msg",
            "CPU min–max",
            "RSS/worker",
            "RSS min–max",
            "RSS parent",
        ],
        rows,
    )

    def rates(variant: str) -> list[float]:
        return [d.rate for d in results.get(variant, [])]

    def cpu_per_round(variant: str) -> list[float]:
        return [d.cpu_us for d in results.get(variant, [])]

    def rss_per_round(variant: str) -> list[float]:
        return [median(d.worker_rss) for d in results.get(variant, []) if d.worker_rss]

    rows = []
    summary = []
    for num, den, target, label, values in [
        ("messenger", "actor", 0.9, "msg/s, messenger / plain actor, same project", rates),
        ("messenger", "dramatiq", None, "msg/s, messenger / plain dramatiq", rates),
        ("messenger", "django-dramatiq", None, "msg/s, messenger / django-dramatiq", rates),
        ("messenger", "celery", 2.0, "msg/s, messenger / celery prefork", rates),
        (
            "messenger",
            "django-dramatiq",
            1.2,
            "RSS, messenger / plain django-dramatiq (lower is better)",
            rss_per_round,
        ),
        ("django-dramatiq", "dramatiq", None, "msg/s, django-dramatiq / plain dramatiq", rates),
        ("messenger-tracked", "messenger", None, "msg/s, messenger tracked / messenger", rates),
        ("messenger-idempotent", "messenger", None, "msg/s, messenger idempotent / messenger", rates),
        ("messenger", "actor", None, "CPU/msg, messenger / plain actor, same project (lower)", cpu_per_round),
        ("messenger", "dramatiq", None, "CPU/msg, messenger / plain dramatiq (lower)", cpu_per_round),
        (
            "messenger",
            "django-dramatiq",
            None,
            "CPU/msg, messenger / django-dramatiq (lower)",
            cpu_per_round,
        ),
        (
            "messenger-tracked",
            "messenger",
            None,
            "CPU/msg, messenger tracked / messenger (lower)",
            cpu_per_round,
        ),
        (
            "messenger-idempotent",
            "messenger",
            None,
            "CPU/msg, messenger idempotent / messenger (lower)",
            cpu_per_round,
        ),
    ]:
        n, d = values(num), values(den)
        if not n or not d:
            continue
        value, band = ratio_band(n, d)
        lower = values is rss_per_round or values is cpu_per_round
        if target:
            summary.append(
                {
                    "name": f"worker: {label}",
                    "value": value,
                    "band": band,
                    "target": f"{'<=' if lower else '>='} {target}x",
                    "verdict": verdict(value, target, lower_is_better=lower),
                }
            )
        rows.append(
            [
                label,
                f"{value:.2f}x",
                band,
                f"{'<=' if lower else '>='} {target}x" if target else "-",
                verdict(value, target, lower_is_better=lower) if target else "-",
            ]
        )
    print_table(
        f"Ratios on {args.broker} (noise band: min–max of the per-round ratios)",
        ["ratio", "median", "band", "target", "verdict"],
        rows,
    )
    for variant, rows_now in sorted(rows_written.items()):
        notes.append(
            f"{variant}: {drained[variant]:,} messages published, {rows_now:,} "
            f"{ROW_TABLES[PIECES[variant]]} rows written (the messages still prefetched when the "
            "queue was empty are handled before the worker stops)."
        )
    for note in notes:
        print(f"\nNote: {note}")
    write_summary(args.summary, summary)


if __name__ == "__main__":
    run_main(main)
