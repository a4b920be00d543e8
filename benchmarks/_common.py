"""What the benchmark scripts share: processes, RabbitMQ queues, statistics and tables."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SETTINGS = "benchmarks.project.settings"
DRAMATIQ_READY = "Worker process is ready for action."

WRK_MISSING = (
    "wrk is not installed. It comes from Debian's packages: `sudo apt-get install -y wrk` "
    "(or build it from https://github.com/wg/wrk), then run this script again."
)


class Skip(Exception):
    """A requirement is missing: the script prints why and exits with status 2."""


def run_main(main: Callable[[], None]) -> None:
    try:
        main()
    except Skip as exc:
        print(f"SKIPPED: {exc}", file=sys.stderr)
        sys.exit(2)


def new_prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def bench_env(prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a benchmark project process."""
    return {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "BENCH_PREFIX": prefix,
        "BENCH_AMQP_URL": AMQP_URL,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def pg_env() -> dict[str, str]:
    """The ``BENCH_PG_*`` variables of this process, for the processes a script starts."""
    return {key: value for key, value in os.environ.items() if key.startswith("BENCH_PG_")}


def pg_params(env: dict[str, str]) -> dict[str, Any]:
    return {
        "host": env.get("BENCH_PG_HOST", "127.0.0.1"),
        "port": env.get("BENCH_PG_PORT", "5432"),
        "user": env.get("BENCH_PG_USER", "postgres"),
    }


def require_postgres(env: dict[str, str], what: str) -> None:
    """Skip (status 2) unless PostgreSQL listens where ``BENCH_PG_*`` say; ``what`` needs it."""
    host, port = env.get("BENCH_PG_HOST", "127.0.0.1"), int(env.get("BENCH_PG_PORT", "5432"))
    if not port_open(port, host):
        raise Skip(f"{what} needs PostgreSQL on {host}:{port} (BENCH_PG_HOST, BENCH_PG_PORT).")


def create_database(name: str, env: dict[str, str]) -> None:
    """Create the PostgreSQL database ``name`` and migrate it (django_messenger's tables).

    ``env`` is the environment of a benchmark project process whose ``default`` database is
    ``name`` (``BENCH_OUTBOX_DB`` or ``BENCH_DB``).
    """
    import psycopg

    with psycopg.connect(**pg_params(env), dbname="postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [PYTHON, "-m", "django", "migrate", "--verbosity", "0"], env=env, cwd=ROOT, check=True, timeout=120
    )


def drop_database(name: str, env: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(**pg_params(env), dbname="postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def count_rows(database: str, env: dict[str, str], table: str) -> int:
    import psycopg

    with psycopg.connect(**pg_params(env), dbname=database) as connection:
        row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise Skip(WRK_MISSING)
    return path


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_rabbitmq() -> None:
    if not port_open(5672):
        raise Skip("RabbitMQ is not listening on 127.0.0.1:5672 (start it: `rabbitmq-server -detached`).")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"Timed out after {timeout:.0f} s waiting for {what}.")
        time.sleep(interval)


# -- processes --------------------------------------------------------------------------


_log_dir: Path | None = None


def log_dir() -> Path:
    """The directory of the started processes' logs, made on first use (not on import: the
    benchmark project's processes import this module through ``benchmarks.brokers``).

    The logs go away with the script unless BENCH_KEEP_LOGS is set (errors print the tail of
    the log that explains them).
    """
    global _log_dir
    if _log_dir is None:
        _log_dir = Path(tempfile.mkdtemp(prefix="django-messenger-bench-"))
        if not os.environ.get("BENCH_KEEP_LOGS"):
            atexit.register(shutil.rmtree, _log_dir, True)
    return _log_dir


@dataclass
class Process:
    """A process started in a session of its own (so that its children stop with it)."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    name: str
    stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the main process, then SIGKILL its whole process group if anything is left."""
        if self.stopped:
            return
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


_started: list[Process] = []


def start(name: str, args: Sequence[str], env: dict[str, str]) -> Process:
    log_path = log_dir() / f"{name}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = Process(popen=popen, log_path=log_path, name=name)
    _started.append(process)
    return process


def stop_all() -> None:
    for process in reversed(_started):
        process.stop()
    _started.clear()


def start_gunicorn(
    name: str, env: dict[str, str], *, worker_class: str, workers: int = 2, threads: int = 8
) -> tuple[Process, str]:
    """gunicorn serving the benchmark project on a free loopback port; returns it and its URL."""
    port = free_port()
    args = [
        PYTHON,
        "-m",
        "gunicorn",
        "benchmarks.project.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--threads",
        str(threads if worker_class == "gthread" else 1),
        "--timeout",
        "60",
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
    ]
    server = start(name, args, env)

    def up() -> bool:
        server.check_alive()
        return port_open(port)

    wait_for(up, timeout=60, what=f"{name} to listen")
    return server, f"http://127.0.0.1:{port}"


def start_dramatiq(name: str, args: Sequence[str], env: dict[str, str], processes: int) -> Process:
    """A Dramatiq worker (``dramatiq`` or ``rundramatiq``); returns once every process is ready."""
    worker = start(name, args, env)

    def ready() -> bool:
        worker.check_alive()
        return worker.log().count(DRAMATIQ_READY) >= processes

    wait_for(ready, timeout=90, what=f"{name} to be ready")
    return worker


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                for child in text.split():
                    found.append(int(child))
                    found.extend(children(int(child)))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """The CPU time (user + system, every thread) ``pids`` have used so far; a gone pid counts 0.

    A measure that load from other processes hardly changes, unlike a rate: the worker benchmark
    reports it per message beside the messages/s.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            # the fields after the command's closing parenthesis: utime and stime are 14 and 15 of stat
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_mib(pid: int) -> float | None:
    """VmRSS of ``pid`` in MiB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- RabbitMQ ---------------------------------------------------------------------------


def amqp_channel() -> tuple[Any, Any]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    return connection, connection.channel()


def all_queue_names(queues: Iterable[str]) -> list[str]:
    """``queues`` with the delay and dead-letter queues Dramatiq declares beside each."""
    return [name for queue in queues for name in (queue, f"{queue}.DQ", f"{queue}.XQ")]


def purge(queues: Iterable[str]) -> None:
    import pika.exceptions

    connection, _ = amqp_channel()
    try:
        for queue in all_queue_names(queues):
            channel = connection.channel()
            try:
                channel.queue_purge(queue)
            except pika.exceptions.ChannelClosedByBroker:  # not declared (yet)
                continue
            channel.close()
    finally:
        connection.close()


def delete_queues(queues: Iterable[str], exchanges: Iterable[str] = ()) -> None:
    connection, channel = amqp_channel()
    try:
        for queue in all_queue_names(queues):
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


def queue_depth(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


# -- numbers and tables -----------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


def ratio_band(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, str]:
    """Median ratio of two variants and its noise band: the min–max of the per-round ratios."""
    per_round = [n / d for n, d in zip(numerators, denominators, strict=False) if d]
    if not per_round or not median(denominators):
        return float("nan"), "-"
    return median(numerators) / median(denominators), f"{min(per_round):.2f}–{max(per_round):.2f}"


def verdict(value: float, target: float, *, lower_is_better: bool = False) -> str:
    if value != value:  # NaN
        return "n/a"
    met = value <= target if lower_is_better else value >= target
    return "met" if met else "NOT met"


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A Markdown table (so it pastes into docs/performance.md as it is)."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [
        max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)
    ]
    print(f"\n### {title}\n")
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def rabbitmq_version() -> str:
    version = "?"
    with contextlib.suppress(Exception):
        connection, _ = amqp_channel()
        found = connection._impl.server_properties.get("version", b"?")
        version = found.decode() if isinstance(found, bytes) else str(found)
        connection.close()
    return version


def machine_info(server: str | None = None) -> str:
    """The header line of a run: the machine, the versions, and the broker's server
    (``server``, e.g. ``"Redis 7.0.15"``; RabbitMQ's version when not given)."""
    import django
    import dramatiq
    import pika

    if server is None:
        server = f"RabbitMQ {rabbitmq_version()}"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"nproc {os.cpu_count()}, load average {load}, Python {platform.python_version()}, "
        f"Django {django.get_version()}, Dramatiq {dramatiq.__version__}, pika {pika.__version__}, {server}"
    )


def write_summary(path: str | None, ratios: Iterable[dict[str, Any]]) -> None:
    """Write the target ratios of a run to ``path`` as JSON (for ``benchmarks.targets``); no path, nothing.

    Each ratio: ``name``, ``value`` (median), ``band`` ("min–max" of the per-round ratios),
    ``target`` and ``verdict``.
    """
    if path:
        Path(path).write_text(json.dumps(list(ratios), indent=2), encoding="utf-8")


def call_rows(variants: Sequence[str], run: Callable[[str], Any], n: int) -> list[list[str]]:
    """Rows of Python function calls per ``run(variant)``, counted by cProfile over ``n`` runs after
    a warm-up, with the difference from the first variant. Unlike a time, the count does not
    change with the machine's load."""
    import cProfile
    import pstats

    counts = {}
    for variant in variants:
        for _ in range(20):
            run(variant)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            run(variant)
        profiler.disable()
        counts[variant] = pstats.Stats(profiler).total_calls / n
    base = counts[variants[0]]
    return [[variant, f"{count:,.1f}", f"{count - base:+,.1f}"] for variant, count in counts.items()]


def gate_call_rows(run: Callable[[], Any], n: int, gates: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Rows of what the ``gates`` cost per ``run()`` over ``n`` runs after a warm-up: for each gate,
    a function given as (file name suffix, function name), how often it is called and the calls
    made inside it however deep (Python functions and built-ins, as ``sys.setprofile`` sees them);
    then the gates together (each call counted once) and every call of the run.

    Issue 11's "costs nothing when off": the gates are the checks that decide a piece is off.
    Like ``call_rows``, a count that the machine's load does not change."""
    names = {name for _, name in gates}
    own = [0] * len(gates)
    inside = [0] * len(gates)
    total = [0, 0]  # every call; calls of or inside a gate
    stack: list[tuple[int, Any]] = []  # the gates running now: (index, frame)

    def gate_of(code: Any) -> int | None:
        if code.co_name in names:
            for index, (suffix, name) in enumerate(gates):
                if code.co_name == name and code.co_filename.endswith(suffix):
                    return index
        return None

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            total[0] += 1
            if stack:
                total[1] += 1
                for index in {index for index, _ in stack}:
                    inside[index] += 1
            if event == "call":
                gate = gate_of(frame.f_code)
                if gate is not None:
                    own[gate] += 1
                    if not stack:
                        total[1] += 1
                    stack.append((gate, frame))
        elif event == "return" and stack and stack[-1][1] is frame:
            stack.pop()

    for _ in range(20):
        run()
    sys.setprofile(profile)
    try:
        for _ in range(n):
            run()
    finally:
        sys.setprofile(None)
    rows = [
        [f"{suffix.rsplit('/', 1)[-1]}: {name}()", f"{own[index] / n:,.1f}", f"{inside[index] / n:,.1f}"]
        for index, (suffix, name) in enumerate(gates)
    ]
    rows.append(["the gates together, with what they call", "", f"{total[1] / n:,.1f}"])
    rows.append(["every call of the run", "", f"{total[0] / n:,.1f}"])
    return rows
