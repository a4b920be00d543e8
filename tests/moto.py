"""A moto server (moto's SQS, in server mode) on a free loopback port, for the SQS tests.

Started as its own process (``python -m moto.server``, what ``moto_server`` runs), so that the
test's workers and web servers reach it over HTTP as they would reach SQS; stopped after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

#: The environment boto3 needs to talk to moto: any credentials, one region.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class MotoServer:
    """``with MotoServer(log_path) as moto: moto.endpoint_url`` — a moto server while the block runs."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = _free_port()
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> MotoServer:
        output = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **AWS_ENV},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.popen.poll() is not None:
                raise RuntimeError(f"moto's server exited with {self.popen.returncode} before it listened.")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto's server did not listen on 127.0.0.1:{self.port} in {timeout}s.")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
