"""Profile: what one POST costs in-process, per variant, without a server or a load generator.

Calls Django's WSGI handler of the benchmark project directly (the same views as
``http_dispatch``) in interleaved rounds and prints the median µs per request, so the cost of
each layer is the difference between two rows. It also prints the process's CPU time per
request (``time.process_time``): on a loaded machine the wall time mostly measures the wait for
RabbitMQ's confirm, while the CPU time is what a gunicorn worker pays for each request.
``--profile VARIANT`` then runs that variant under pyinstrument (``pip install -e '.[bench]'``)
and prints the call tree. ``--calls`` counts Python function calls per request (what load
does not change), and what issue 11's pieces cost a messenger request when they are off.
Needs RabbitMQ for the variants that send. ``BENCH_CONFIRM=0`` runs with confirms off (broker and messenger).

    python -m benchmarks.profile_dispatch
    python -m benchmarks.profile_dispatch --profile messenger
    BENCH_CONFIRM=0 python -m benchmarks.profile_dispatch --profile messenger
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections import defaultdict
from typing import Any

from benchmarks._common import (
    call_rows,
    delete_queues,
    gate_call_rows,
    median,
    new_prefix,
    print_table,
    require_rabbitmq,
    run_main,
    spread,
)

PATHS = {"bare": "/bare/", "dramatiq": "/dramatiq/", "messenger": "/messenger/", "celery": "/celery/"}
BODY = b'{"name": "ada", "count": 3}'
#: What a messenger request without an Idempotency-Key to an untracked view costs issue 11's
#: pieces: the two switches, the key's claim that returns when the view takes no key, and the
#: look for a TrackStamp before the answer (the claim's release in ``finalize_response`` is a
#: ``dict.pop``: one built-in call, not counted here).
GATES = [
    ("django_messenger/mixins.py", "messenger_tracked"),
    ("django_messenger/mixins.py", "messenger_idempotency_mode"),
    ("django_messenger/mixins.py", "_claim_idempotency_key"),
    ("django_messenger/mixins.py", "messenger_status_location"),
]


def environ(path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(BODY),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--requests", type=int, default=2000, help="requests per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="bare,dramatiq,messenger")
    parser.add_argument(
        "--profile", metavar="VARIANT", help="run VARIANT under pyinstrument and print the tree"
    )
    parser.add_argument(
        "--calls",
        action="store_true",
        help="also count the Python function calls per request (cProfile): a measure load does not change",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 requests, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 50, 1
    require_rabbitmq()

    prefix = new_prefix()
    os.environ["BENCH_PREFIX"] = prefix
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.project.settings"
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    from django.conf import settings

    def call(path: str) -> None:
        status: list[str] = []
        for _ in application(environ(path), lambda s, h, *a: status.append(s)):
            pass
        if not status[0].startswith("202"):
            raise RuntimeError(f"{path} answered {status[0]}")

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    try:
        for variant in variants:
            for _ in range(100):
                call(PATHS[variant])
        for round_index in range(args.rounds):
            shift = round_index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                path = PATHS[variant]
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(args.requests):
                    call(path)
                results[variant].append((time.perf_counter() - t0) / args.requests * 1e6)
                cpu[variant].append((time.process_time() - c0) / args.requests * 1e6)
        rows = []
        base, cpu_base = median(results[variants[0]]), median(cpu[variants[0]])
        for variant in variants:
            value, cpu_value = median(results[variant]), median(cpu[variant])
            rows.append(
                [
                    variant,
                    f"{value:.0f}",
                    spread(results[variant]),
                    f"{value - base:+.0f}",
                    f"{cpu_value:.0f}",
                    spread(cpu[variant]),
                    f"{cpu_value - cpu_base:+.0f}",
                ]
            )
        confirm = "on" if settings.CONFIRM else "off"
        print_table(
            f"In-process POST, µs per request (confirms {confirm}, median of {args.rounds})",
            [
                "variant",
                "wall µs",
                "wall min–max",
                f"vs {variants[0]}",
                "CPU µs",
                "CPU min–max",
                f"CPU vs {variants[0]}",
            ],
            rows,
        )
        if args.calls:
            print_table(
                "Python function calls per request (cProfile's count)",
                ["variant", "calls/request", f"vs {variants[0]}"],
                call_rows(variants, lambda variant: call(PATHS[variant]), min(args.requests, 300)),
            )
            if "messenger" in variants:
                print_table(
                    "Issue 11's pieces when off: Python function calls per messenger request "
                    "(untracked, no Idempotency-Key)",
                    ["gate", "calls of it", "calls inside it"],
                    gate_call_rows(lambda: call(PATHS["messenger"]), min(args.requests, 300), GATES),
                )
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0001)
            with profiler:
                for _ in range(args.requests):
                    call(PATHS[args.profile])
            print(profiler.output_text(unicode=True, color=False, show_all=False))
    finally:
        delete_queues([settings.MESSENGER_QUEUE, settings.RAW_QUEUE])


if __name__ == "__main__":
    run_main(main)
