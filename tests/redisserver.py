"""A ``redis-server`` of a test's own, on a free loopback port, with the options under test.

The machine's Redis (6379) is shared by other test runs: a test that changes a server's
memory limit or eviction policy starts its own instead, and stops it at teardown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

import pytest

from tests.integration.processes import free_port, port_open, wait_for

#: No persistence: nothing written to disk, nothing to clean up beyond the directory.
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


class RedisServer:
    """``with RedisServer(tmp_path, "--maxmemory", "16mb") as server: server.url``.

    Skips the test when ``redis-server`` is not installed (it comes with Debian's
    ``redis-server`` package, as the machine's own Redis does); fails instead in CI.
    """

    def __init__(self, directory: Path, *options: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            reason = "redis-server is not installed (apt-get install -y redis-server)"
            if os.environ.get("CI"):
                pytest.fail(f"{reason}: CI must have it, .ci/run starts the machine's Redis with it.")
            pytest.skip(f"{reason}.")
        self.binary = binary
        self.directory = directory
        self.options = options
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.port = free_port()
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            [*args, *NO_PERSISTENCE, *self.options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: port_open(self.port), timeout=15, what="redis-server to listen")
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
