"""Real processes for integration tests: ``rundramatiq`` workers and a gunicorn server.

Every process runs in a session of its own so that stopping it stops its children
(dramatiq forks its worker processes); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Re-exported: the integration tests import them from here
from tests.loopback import free_port as free_port
from tests.loopback import port_open as port_open

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "Worker process is ready for action."


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {what or predicate}.")
        time.sleep(interval)


@dataclass
class Process:
    """A started process, its log file, and how to stop it."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    name: str
    stopped: bool = field(default=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the main process (it stops its children, as dramatiq and gunicorn do),
        then SIGKILL the whole group if it is still there after ``timeout``.

        Only the main process gets the SIGTERM: dramatiq treats a second SIGTERM in a
        worker process as "kill now", so signalling the group would cut handlers short.
        """
        if self.stopped:
            return self.popen.returncode
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            self.signal(signal.SIGKILL)  # any child left behind

    def kill(self) -> None:
        self.stopped = True
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


def start(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Process:
    log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
    log = log_path.open("wb")
    popen = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return Process(popen=popen, log_path=log_path, name=name)


def start_worker(
    env: dict[str, str],
    log_dir: Path,
    *,
    queues: list[str],
    processes: int = 1,
    threads: int = 4,
    timeout: float = 60.0,
    shutdown_timeout_ms: int = 10_000,
) -> Process:
    """``python manage.py rundramatiq`` on ``queues``; returns once every process is ready."""
    args = [
        sys.executable,
        "manage.py",
        "rundramatiq",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--worker-shutdown-timeout",
        str(shutdown_timeout_ms),
        "--queues",
        *queues,
    ]
    worker = start("worker", args, env, log_dir)

    def ready() -> bool:
        if worker.popen.poll() is not None:
            raise AssertionError(f"The worker exited with {worker.popen.returncode}:\n{worker.log()}")
        return worker.log().count(READY_LINE) >= processes

    wait_for(ready, timeout=timeout, what="the worker to be ready")
    return worker


def start_server(
    env: dict[str, str], log_dir: Path, *, wsgi: str, workers: int = 1, threads: int = 4
) -> tuple[Process, str]:
    """gunicorn serving ``wsgi`` on a free loopback port; returns it and its base URL."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        wsgi,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--timeout",
        "60",
        "--graceful-timeout",
        "5",
    ]
    server = start("server", args, env, log_dir)

    def up() -> bool:
        if server.popen.poll() is not None:
            raise AssertionError(f"The server exited with {server.popen.returncode}:\n{server.log()}")
        return port_open(port)

    wait_for(up, timeout=60, what="the server to listen")
    return server, f"http://127.0.0.1:{port}"


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python manage.py *args`` with ``env``, to its end (at most a minute); its output captured."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
