"""A server process of a test run's own on a free loopback port: started, waited for, stopped.

The servers the tests start themselves (moto for SQS, tansu for Kafka, Google's Pub/Sub
emulator) are subclasses of :class:`LoopbackServer`: each names its command and environment,
and runs in a process group of its own, so that stopping it stops whatever it spawned (a JVM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class LoopbackServer:
    """``with Server() as server: ...`` — the server listens on ``server.port`` while the block runs."""

    #: How errors name the server ("tansu", "The Pub/Sub emulator").
    label: ClassVar[str]
    #: Seconds between two looks for the port while the server starts.
    poll_interval: ClassVar[float] = 0.1
    #: Seconds a SIGTERM is given before a SIGKILL.
    stop_timeout: ClassVar[float] = 10.0
    #: Seconds :meth:`start` waits for the port by default.
    start_timeout: ClassVar[float] = 60.0

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The server's argv (raises RuntimeError when it is not installed)."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float | None = None) -> Self:
        """Start the server; return once it listens (RuntimeError if it exits or does not in time)."""
        timeout = self.start_timeout if timeout is None else timeout
        command = self.command()
        output = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.popen = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.popen.returncode} before it listened.")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.label} did not listen on 127.0.0.1:{self.port} in {timeout}s.")
            time.sleep(self.poll_interval)
        return self

    def start_or_skip(self) -> Self:
        """:meth:`start`, or skip the test when the server cannot start (fail it in CI, which must
        have every server)."""
        try:
            return self.start()
        except (OSError, RuntimeError) as exc:
            reason = f"{self.label} did not start: {exc}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)

    def stop(self) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL); nothing if it is not running."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
