"""HTTP dispatch: requests/s of a messenger POST endpoint against the hand-written alternatives.

One run compares, on gunicorn (2 workers; ``sync``, then ``gthread`` with 8 threads) loaded by
``wrk -t2 -c16`` on loopback, all views validating the same serializer and answering 202, every
sending view on the same broker (``--broker``: ``rabbitmq``, the default, ``redis``, ``sqs`` or
``postgres``; see
``benchmarks/brokers.py``):

  (a) bare       validate, answer 202, send nothing
  (b) dramatiq   ``actor.send()`` by hand, broker ``confirm_delivery=True``
  (c) dramatiq   the same, confirms off
  (d) messenger  ``MessengerViewSet`` with confirms (messenger's default)
  (e) messenger  confirms off (broker and ``MESSENGER["CONFIRM_DELIVERY"]``)
  (f) celery     ``.delay()`` (no confirms: Celery's default); skipped without celery
  (g) messenger  the transactional outbox: the view commits a row to PostgreSQL (a database
                 of the run's own, on 127.0.0.1:5432 or ``BENCH_PG_*``) and answers; a
                 ``messenger_relay`` process publishes the rows with confirms meanwhile
  (h) messenger  confirms, status tracking on (``messenger_track = True``): a TrackStamp on the
                 envelope and a ``Location`` with a signed token on each 202
  (i) messenger  confirms, each request with a NEW ``Idempotency-Key`` (``post_keyed.lua``),
                 the keys in PostgreSQL: a claim and a store per request
  (j) messenger  the same, the keys in a Redis cache (``IDEMPOTENCY_CACHE``; 127.0.0.1:6379 or
                 ``BENCH_REDIS_URL``, under the run's own key prefix, deleted at the end)

(h), (i) and (j) are issue 11's pieces when on, to compare with (d): they are not in the
default ``--variants`` (``--variants dhij`` runs them). Their gunicorns' database is a
PostgreSQL database of the run's own, created, migrated and dropped like (g)'s; (d)'s touches
no database (an untracked write without a key writes nothing). Before measuring, each is
checked once: (h) answers with a ``Location``, (i) and (j) replay a repeated key.

(c) and (e) exist only where a send can skip the broker's answer (RabbitMQ); (f) runs on
RabbitMQ only. On Redis a send waits for the enqueue script's answer: (b) and (d) compare.

Each broker configuration is its own gunicorn (``BENCH_CONFIRM=1`` or ``0``), all started
once and kept running; the variants are measured in interleaved rounds (the order rotates
each round) and every queue is purged after each measurement (nobody consumes). Prints the
median requests/s over the rounds, the min–max spread, and the ratios issue 4 names with the
min–max of the per-round ratios as the noise band.

Needs the broker's server (RabbitMQ on 127.0.0.1:5672, Redis on 127.0.0.1:6379, an SQS endpoint
on ``BENCH_SQS_URL``, PostgreSQL; see benchmarks/README.md) and wrk
(``apt-get install -y wrk``).

    python -m benchmarks.http_dispatch               # ~3 minutes
    python -m benchmarks.http_dispatch --quick       # smoke run, a few seconds
    python -m benchmarks.http_dispatch --broker redis
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

from benchmarks._common import (
    PYTHON,
    ROOT,
    bench_env,
    count_rows,
    create_database,
    drop_database,
    machine_info,
    median,
    new_prefix,
    pg_env,
    port_open,
    print_table,
    ratio_band,
    require_wrk,
    run_main,
    spread,
    start,
    start_gunicorn,
    stop_all,
    verdict,
    wait_for,
    write_summary,
)
from benchmarks.brokers import BROKERS, DEFAULT

LUA = str(ROOT / "benchmarks" / "post.lua")
KEYED_LUA = str(ROOT / "benchmarks" / "post_keyed.lua")
BODY = b'{"name": "ada", "count": 3}'


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    confirm: bool
    path: str
    queue: str | None  # the queue it fills, suffix-less (see settings.py), or None
    outbox: bool = False
    #: issue 11's pieces: "" none, "db" PostgreSQL as the database, "cache" and the keys in Redis
    store: str = ""
    keyed: bool = False  # a new Idempotency-Key on each request

    @property
    def server(self) -> str:
        """The gunicorn it is measured on: confirms (c), none (n), the outbox (o), PostgreSQL
        as the database (p), and the keys in a Redis cache (k)."""
        if self.outbox:
            return "o"
        if self.store:
            return "k" if self.store == "cache" else "p"
        return "c" if self.confirm else "n"


VARIANTS = [
    Variant("a", "bare DRF view (no send)", True, "/bare/", None),
    Variant("b", "dramatiq actor.send(), confirms", True, "/dramatiq/", "raw-c"),
    Variant("c", "dramatiq actor.send(), no confirms", False, "/dramatiq/", "raw-n"),
    Variant("d", "messenger, confirms (default)", True, "/messenger/", "messenger-c"),
    Variant("e", "messenger, no confirms", False, "/messenger/", "messenger-n"),
    Variant("f", "celery .delay()", True, "/celery/", "celery"),
    Variant("g", "messenger, outbox (PostgreSQL row)", True, "/messenger/", "messenger-o", outbox=True),
    Variant("h", "messenger, tracked (Location)", True, "/messenger/tracked/", "messenger-c", store="db"),
    Variant(
        "i",
        "messenger, new Idempotency-Key (db)",
        True,
        "/messenger/keyed/",
        "messenger-c",
        store="db",
        keyed=True,
    ),
    Variant(
        "j",
        "messenger, new Idempotency-Key (Redis cache)",
        True,
        "/messenger/keyed/",
        "messenger-c",
        store="cache",
        keyed=True,
    ),
]


@dataclass
class WrkResult:
    rps: float
    errors: int  # non-2xx answers and socket errors
    requests: int  # answered


def run_wrk(
    wrk: str, url: str, *, duration: int, threads: int, connections: int, key_prefix: str | None = None
) -> WrkResult:
    """Run wrk on ``url``; with ``key_prefix``, each request has a new Idempotency-Key under it."""
    script = ["-s", LUA, url] if key_prefix is None else ["-s", KEYED_LUA, url, "--", key_prefix]
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", *script],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"Unexpected wrk output:\n{out}")
    errors = 0
    answered = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sockets:
        # gunicorn's sync workers close every connection: wrk counts some as read errors.
        errors += int(sockets.group(1)) + int(sockets.group(3)) + int(sockets.group(4))
    return WrkResult(float(match.group(1)), errors, int(answered.group(1)) if answered else 0)


def post(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """POST the benchmark's body to ``url``: the status and the headers (status 0: no answer)."""
    request = urllib.request.Request(
        url, data=BODY, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)
    except OSError:
        return 0, {}


def answers(url: str) -> bool:
    """Whether a POST of the benchmark's body to ``url`` gets a 202."""
    return post(url)[0] == 202


def check_piece(v: Variant, url: str, key_prefix: str) -> None:
    """Fail unless ``v``'s piece is on: (h) a ``Location`` with a token, (i)/(j) a replayed key."""
    if v.keyed:
        key = {"Idempotency-Key": f"{key_prefix}-check"}
        first, (second, headers) = post(url, key)[0], post(url, key)
        if (first, second, headers.get("Idempotent-Replayed")) != (202, 202, "true"):
            raise RuntimeError(
                f"({v.key}) {url}: a repeated Idempotency-Key was not replayed ({first}, {second})."
            )
    elif v.store:
        status, headers = post(url)
        if status != 202 or "token=" not in headers.get("Location", ""):
            raise RuntimeError(f"({v.key}) {url}: no status Location on the answer ({status}).")


#: Issue 11's pieces when on, against the plain confirmed dispatch of the same run.
PIECES = [
    ("h", "d", None, "messenger tracked / messenger confirmed"),
    ("i", "d", None, "messenger new key, db / messenger confirmed"),
    ("j", "d", None, "messenger new key, Redis cache / messenger confirmed"),
]


def delete_cache_keys(url: str, prefix: str) -> int:
    """Delete (j)'s keys, the Redis keys under the run's ``KEY_PREFIX`` (Django's
    ``prefix:version:key``); how many there were."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        # Only the keys' own names: on --broker redis, Dramatiq's keys share the prefix.
        names = list(client.scan_iter(match=f"{prefix}:*:django_messenger:idempotency:*", count=1000))
        for start_at in range(0, len(names), 500):
            client.delete(*names[start_at : start_at + 500])
        return len(names)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=4, help="seconds of each wrk run (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--worker-classes", default="sync,gthread", help="gunicorn worker classes to compare")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--gthread-threads", type=int, default=8)
    parser.add_argument("--variants", default="abcdefg", help="which variants to run (letters)")
    parser.add_argument("--broker", choices=list(BROKERS), default=DEFAULT, help="default: %(default)s")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s, 1 round, sync workers, no warm-up"
    )
    parser.add_argument("--summary", metavar="FILE", help="also write the target ratios to FILE as JSON")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.worker_classes = 1, 1, "sync"

    wrk = require_wrk()
    prefix = new_prefix()
    broker = BROKERS[args.broker](prefix)
    broker.require()
    variants = [v for v in VARIANTS if v.key in args.variants]
    notes: list[str] = []
    if any(not v.confirm for v in variants) and False not in broker.confirm_modes:
        variants = [v for v in variants if v.confirm]
        notes.append(f"(c), (e) skipped: {broker.no_unconfirmed_note}")
    if args.broker != "rabbitmq" and any(v.key == "f" for v in variants):
        variants = [v for v in variants if v.key != "f"]
        notes.append(f"(f) celery skipped: the Celery variant runs on RabbitMQ only (not {args.broker}).")
    if args.broker == "postgres" and any(v.store for v in variants):
        variants = [v for v in variants if not v.store]
        notes.append(
            "(h), (i), (j) skipped: on postgres the project's database is the broker's (its schema); "
            "run them on another broker."
        )
    if (
        any(v.store == "cache" for v in variants)
        and not port_open(6379)
        and "BENCH_REDIS_URL" not in os.environ
    ):
        variants = [v for v in variants if v.store != "cache"]
        notes.append("(j) skipped: Redis is not listening on 127.0.0.1:6379 (BENCH_REDIS_URL).")
    if args.broker == "postgres" and any(v.outbox for v in variants):
        variants = [v for v in variants if not v.outbox]
        notes.append(
            "(g) outbox skipped: on postgres the broker's enqueue already joins the caller's "
            "transaction (its queue table is an outbox; check W017)."
        )
    try:
        import celery  # noqa: F401
    except ImportError:
        if any(v.key == "f" for v in variants):
            variants = [v for v in variants if v.key != "f"]
            notes.append("(f) celery skipped: celery is not installed (pip install -e '.[bench]').")

    queues = sorted({f"{prefix}-{v.queue}" for v in variants if v.queue})
    outbox_db = prefix.replace("-", "_") + "_outbox"
    pieces_db = prefix.replace("-", "_") + "_pieces"
    classes = [c.strip() for c in args.worker_classes.split(",") if c.strip()]
    print(f"Machine: {machine_info(f'{broker.server} {broker.version()}')}")
    print(
        f"Broker {args.broker}: gunicorn {args.gunicorn_workers} workers ({', '.join(classes)}; gthread with "
        f"{args.gthread_threads} threads), wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{args.rounds} interleaved rounds"
    )
    results: dict[tuple[str, str], list[float]] = defaultdict(list)
    errors: dict[tuple[str, str], int] = defaultdict(int)
    keyed_requests: dict[str, int] = defaultdict(int)  # every wrk request of (i), (j), warm-up included
    keys_stored: dict[str, int] = {}
    try:
        servers: dict[tuple[str, str], str] = {}
        outbox_env = bench_env(
            prefix,
            BENCH_OUTBOX="1",
            BENCH_OUTBOX_DB=outbox_db,
            BENCH_BROKER=args.broker,
            **pg_env(),
            **broker.env(),
        )
        # Issue 11's pieces: (h) and (i) on "p", (j) on "k" (the keys in Redis, under the prefix).
        pieces_env = bench_env(
            prefix, BENCH_DB=pieces_db, BENCH_BROKER=args.broker, **pg_env(), **broker.env()
        )
        cache_env = {**pieces_env, "BENCH_IDEMPOTENCY_CACHE": "1"}
        cache_env.setdefault("BENCH_REDIS_URL", os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
        if any(v.outbox for v in variants):
            create_database(outbox_db, outbox_env)
            start("relay", [PYTHON, "-m", "django", "messenger_relay"], outbox_env)
        if any(v.store for v in variants):
            create_database(pieces_db, pieces_env)
        for worker_class in classes:
            for server in sorted({v.server for v in variants}):
                confirm = server != "n"
                env = {"o": outbox_env, "p": pieces_env, "k": cache_env}.get(server, outbox_env)
                if server not in "opk":
                    flag = "1" if confirm else "0"
                    env = bench_env(prefix, BENCH_CONFIRM=flag, BENCH_BROKER=args.broker, **broker.env())
                _, url = start_gunicorn(
                    f"gunicorn-{worker_class}-{server}",
                    env,
                    worker_class=worker_class,
                    workers=args.gunicorn_workers,
                    threads=args.gthread_threads,
                )
                servers[worker_class, server] = url
                # The port opens before the workers have booted: wait for an answer from one.
                wait_for(lambda url=url: answers(url + "/bare/"), timeout=60, what=f"{url} to answer")
        for v in variants:
            if v.store:
                check_piece(v, servers[classes[0], v.server] + v.path, f"{prefix}-{v.key}")
        # Warm-up: every worker process imports, connects and declares its queues.
        for worker_class in classes if not args.quick else []:
            for v in variants:
                keyed_requests[v.key] += run_wrk(
                    wrk,
                    servers[worker_class, v.server] + v.path,
                    duration=1,
                    threads=args.threads,
                    connections=args.connections,
                    key_prefix=f"{prefix}-warm-{worker_class}-{v.key}" if v.keyed else None,
                ).requests
        broker.purge(queues)
        for round_index in range(args.rounds):
            for worker_class in classes:
                shift = round_index % len(variants)
                for v in variants[shift:] + variants[:shift]:
                    result = run_wrk(
                        wrk,
                        servers[worker_class, v.server] + v.path,
                        duration=args.duration,
                        threads=args.threads,
                        connections=args.connections,
                        key_prefix=f"{prefix}-{round_index}-{worker_class}-{v.key}" if v.keyed else None,
                    )
                    results[worker_class, v.key].append(result.rps)
                    errors[worker_class, v.key] += result.errors
                    keyed_requests[v.key] += result.requests
                    if v.queue:
                        broker.purge([f"{prefix}-{v.queue}"])
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    finally:
        stop_all()
        if any(v.outbox for v in variants):
            drop_database(outbox_db, outbox_env)
        if any(v.store for v in variants):
            with contextlib.suppress(Exception):  # only a report: the run may have failed before
                keys_stored["i"] = count_rows(pieces_db, pieces_env, "django_messenger_idempotencykey")
            drop_database(pieces_db, pieces_env)
        if any(v.store == "cache" for v in variants):
            keys_stored["j"] = delete_cache_keys(cache_env["BENCH_REDIS_URL"], prefix)
        broker.cleanup(queues, exchanges=[f"{prefix}-celery"] if any(v.key == "f" for v in variants) else [])
        broker.close()

    for worker_class in classes:
        bare = results.get((worker_class, "a"), [])
        rows = []
        for v in variants:
            values = results[worker_class, v.key]
            # A quick run on a loaded machine can measure 0 requests/s for a variant: no ratio then.
            vs_bare = f"{median(values) / median(bare):.2f}x" if bare and median(bare) else "-"
            rows.append(
                [
                    f"({v.key}) {v.label}",
                    f"{median(values):,.0f}",
                    spread(values),
                    vs_bare,
                    errors[worker_class, v.key],
                ]
            )
        print_table(
            f"HTTP dispatch, gunicorn {worker_class}, {args.broker}: requests/s (median of {args.rounds})",
            ["variant", "req/s", "min–max", "vs bare", "errors"],
            rows,
        )

    def ratio(worker_class: str, num: str, den: str) -> tuple[float, str] | None:
        n, d = results.get((worker_class, num)), results.get((worker_class, den))
        return ratio_band(n, d) if n and d else None

    targets = {
        "sync": [
            ("d", "b", 0.95, "messenger confirmed / dramatiq confirmed"),
            ("e", "c", 0.95, "messenger unconfirmed / dramatiq unconfirmed"),
            ("e", "f", 1.2, "messenger unconfirmed / celery"),
            ("c", "a", None, "dramatiq unconfirmed / bare (issue's reference 0.59)"),
            ("b", "a", None, "dramatiq confirmed / bare (reference 0.28)"),
            ("f", "a", None, "celery / bare (reference 0.46)"),
            ("d", "a", None, "messenger confirmed / bare"),
            ("g", "d", None, "messenger outbox / messenger confirmed"),
            *PIECES,
            ("e", "a", None, "messenger unconfirmed / bare"),
        ],
        "gthread": [
            ("d", "c", 0.9, "messenger confirmed / dramatiq UNconfirmed"),
            ("d", "b", None, "messenger confirmed / dramatiq confirmed"),
            ("e", "c", None, "messenger unconfirmed / dramatiq unconfirmed"),
            ("b", "c", None, "dramatiq confirmed / dramatiq unconfirmed"),
            ("g", "d", None, "messenger outbox / messenger confirmed"),
            *PIECES,
        ],
    }
    rows = []
    summary = []
    for worker_class in classes:
        for num, den, target, label in targets.get(worker_class, []):
            found = ratio(worker_class, num, den)
            if found is None:
                continue
            value, band = found
            if target:
                summary.append(
                    {
                        "name": f"HTTP {worker_class}: ({num})/({den}) {label}",
                        "value": value,
                        "band": band,
                        "target": f">= {target}x",
                        "verdict": verdict(value, target),
                    }
                )
            rows.append(
                [
                    worker_class,
                    f"({num})/({den}) {label}",
                    f"{value:.2f}x",
                    band,
                    f">= {target}x" if target else "-",
                    verdict(value, target) if target else "-",
                ]
            )
    if rows:
        print_table(
            f"Ratios on {args.broker} (noise band: min–max of the per-round ratios)",
            ["workers", "ratio", "median", "band", "target", "verdict"],
            rows,
        )
    if any(errors.values()):
        notes.append("Some runs had errors (non-2xx answers or socket errors): see the errors column.")
    for key, stored in sorted(keys_stored.items()):
        if keyed_requests.get(key):
            # Every request's key is new, so the store holds one per 2xx answer (+1, the check's).
            notes.append(
                f"({key}) sent {keyed_requests[key]:,} requests with a new Idempotency-Key; "
                f"{stored:,} keys were stored."
            )
    for note in notes:
        print(f"\nNote: {note}")
    write_summary(args.summary, summary)


if __name__ == "__main__":
    run_main(main)
