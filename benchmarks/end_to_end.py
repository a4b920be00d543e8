"""End to end: from sending a POST to the start of its handler, at a fixed request rate.

An open-loop client (Python threads sending on a fixed schedule, whatever the answers take,
unlike wrk's closed loop) POSTs at ``--rate`` requests/s to gunicorn (sync, 2 workers,
confirms on: messenger's default) and a ``rundramatiq`` worker (2 processes x 8 threads)
handles the messages:

  messenger  ``MessengerViewSet`` -> messenger's handler of ``TimedPing``
  dramatiq   a hand-written DRF view calling ``actor.send()`` -> a raw Dramatiq actor

The request body carries the client's ``time.time()`` when it sent the request; the handler
reads ``time.time()`` first thing and reports both over UDP on loopback (same machine, same
clock). Latency = handler start - send time. The variants alternate in interleaved rounds;
percentiles pool every round, the spread is the min–max of the per-round p50. The client's
lateness against its schedule is printed so a saturated client shows.

    python -m benchmarks.end_to_end               # 200 req/s, 20 s a variant, 3 rounds: ~2.5 min
    python -m benchmarks.end_to_end --quick       # 50 req/s, 1 s, 1 round
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from benchmarks._common import (
    PYTHON,
    bench_env,
    delete_queues,
    free_port,
    machine_info,
    median,
    new_prefix,
    print_table,
    require_rabbitmq,
    run_main,
    spread,
    start_dramatiq,
    start_gunicorn,
    stop_all,
    verdict,
)

PATHS = {"messenger": "/e2e/messenger/", "dramatiq": "/e2e/dramatiq/"}


class Reports:
    """Collects ``variant sent started`` datagrams from the handlers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.port = free_port()
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.items: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(256)
            except TimeoutError:
                continue
            variant, sent, started = data.decode().split()
            with self.lock:
                self.items.append((variant, float(sent), float(started)))

    def between(self, variant: str, start: float, end: float) -> list[float]:
        """Latencies (ms) of the requests of ``variant`` sent in [start, end)."""
        with self.lock:
            return [(s - t) * 1000 for v, t, s in self.items if v == variant and start <= t < end]

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


@dataclass
class Phase:
    start: float
    end: float
    accepted: int = 0
    failed: int = 0
    lateness_ms: list[float] = field(default_factory=list)


def post(port: int, path: str, phase: Phase, lock: threading.Lock, scheduled: float) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        sent = time.time()
        body = json.dumps({"sent": sent})
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        status = connection.getresponse().status
    except OSError:
        status = 0
    finally:
        connection.close()
    with lock:
        phase.lateness_ms.append((sent - scheduled) * 1000)
        if status == 202:
            phase.accepted += 1
        else:
            phase.failed += 1


def open_loop(port: int, path: str, rate: float, duration: float, pool: ThreadPoolExecutor) -> Phase:
    """Send ``rate`` requests/s for ``duration`` s on a fixed schedule; return when all answered."""
    lock = threading.Lock()
    count = max(1, int(rate * duration))
    t0 = time.time() + 0.05
    phase = Phase(start=t0 - 0.01, end=t0 + duration + 1)
    futures = []
    for i in range(count):
        scheduled = t0 + i / rate
        delay = scheduled - time.time()
        if delay > 0:
            time.sleep(delay)
        futures.append(pool.submit(post, port, path, phase, lock, scheduled))
    for future in futures:
        future.result()
    phase.end = time.time()
    return phase


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s (default 200)")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds per variant and round (default 20)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="worker threads per process")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 req/s for 1 s, 1 round, 1 x 4")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.duration, args.rounds, args.processes, args.threads = 50.0, 1.0, 1, 1, 4
    require_rabbitmq()

    prefix = new_prefix()
    reports = Reports()
    env = bench_env(prefix, BENCH_E2E_UDP_PORT=str(reports.port))
    queues = [f"{prefix}-messenger-c", f"{prefix}-raw-c"]
    variants = list(PATHS)
    print(f"Machine: {machine_info()}")
    print(
        f"open loop {args.rate:.0f} req/s, {args.duration:.0f} s per variant and round, "
        f"{args.rounds} rounds; "
        f"gunicorn sync x2, confirms on; rundramatiq {args.processes} x {args.threads}"
    )
    phases: dict[str, list[Phase]] = defaultdict(list)
    latencies: dict[str, list[list[float]]] = defaultdict(list)
    try:
        _, url = start_gunicorn("gunicorn-e2e", env, worker_class="sync", workers=2)
        port = int(url.rsplit(":", 1)[1])
        argv = [
            PYTHON,
            "-m",
            "benchmarks.project.manage",
            "rundramatiq",
            "--processes",
            str(args.processes),
            "--threads",
            str(args.threads),
            "--queues",
            *queues,
        ]
        start_dramatiq("rundramatiq-e2e", argv, env, args.processes)
        with ThreadPoolExecutor(max_workers=32) as pool:
            for variant in variants:  # warm-up: connections, queue declarations, imports
                open_loop(port, PATHS[variant], min(args.rate, 50.0), 1.0, pool)
            time.sleep(0.5)
            for round_index in range(args.rounds):
                shift = round_index % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    phase = open_loop(port, PATHS[variant], args.rate, args.duration, pool)
                    deadline = time.time() + 10
                    while time.time() < deadline:  # wait for the handlers' last reports
                        got = reports.between(variant, phase.start, phase.end)
                        if len(got) >= phase.accepted:
                            break
                        time.sleep(0.05)
                    phases[variant].append(phase)
                    latencies[variant].append(got)
                print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    finally:
        stop_all()
        reports.close()
        delete_queues(queues)

    rows = []
    for variant in variants:
        pooled = [value for batch in latencies[variant] for value in batch]
        p50s = [percentile(batch, 50) for batch in latencies[variant] if batch]
        late = [value for phase in phases[variant] for value in phase.lateness_ms]
        accepted = sum(phase.accepted for phase in phases[variant])
        failed = sum(phase.failed for phase in phases[variant])
        rows.append(
            [
                variant,
                f"{percentile(pooled, 50):.2f}",
                spread(p50s, "{:.2f}"),
                f"{percentile(pooled, 90):.2f}",
                f"{percentile(pooled, 99):.2f}",
                f"{len(pooled)}/{accepted}",
                failed,
                f"{percentile(late, 99):.2f}",
            ]
        )
    print_table(
        f"End to end at {args.rate:.0f} req/s: POST sent -> handler start, ms",
        ["variant", "p50", "p50 min–max", "p90", "p99", "handled/202", "non-202", "client late p99"],
        rows,
    )
    m = [percentile(batch, 50) for batch in latencies["messenger"] if batch]
    d = [percentile(batch, 50) for batch in latencies["dramatiq"] if batch]
    if m and d:
        value = median(m) / median(d)
        per_round = [a / b for a, b in zip(m, d, strict=False)]
        print_table(
            "Ratio (noise band: min–max of the per-round ratios)",
            ["ratio", "median", "band", "target", "verdict"],
            [
                [
                    "p50, messenger / dramatiq (lower is better)",
                    f"{value:.2f}x",
                    f"{min(per_round):.2f}–{max(per_round):.2f}",
                    "<= 1.2x",
                    verdict(value, 1.2, lower_is_better=True),
                ]
            ],
        )


if __name__ == "__main__":
    run_main(main)
