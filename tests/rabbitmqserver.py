"""A RabbitMQ node of a test's own, with the management plugin, on free loopback ports.

The machine's RabbitMQ (5672) is shared by other test runs and its plugins are not ours to
change: a test of the management API starts its own node (its own node name, data directory,
AMQP, management and distribution ports) and stops it at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from types import TracebackType

import pytest

from tests.integration.processes import free_port, wait_for

#: Debian's rabbitmq-server script switches to the rabbitmq user and logs to /var/log; this one
#: runs the node as it is told.
SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


class RabbitmqServer:
    """``with RabbitmqServer(tmp_path) as node: node.amqp_url, node.management_url``.

    Skips the test when RabbitMQ is not installed (Debian's ``rabbitmq-server`` package, as the
    machine's own RabbitMQ); fails instead in CI.
    """

    def __init__(self, directory: Path) -> None:
        script = SERVER_SCRIPT if SERVER_SCRIPT.exists() else shutil.which("rabbitmq-server")
        if script is None:
            reason = "rabbitmq-server is not installed (apt-get install -y rabbitmq-server)"
            if os.environ.get("CI"):
                pytest.fail(f"{reason}: CI must have it, .ci/run starts the machine's RabbitMQ with it.")
            pytest.skip(f"{reason}.")
        self.script = str(script)
        self.directory = directory
        self.amqp_port = self.management_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def log(self) -> str:
        path = self.directory / "node.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 180.0) -> RabbitmqServer:
        self.amqp_port, self.management_port, dist_port = free_port(), free_port(), free_port()
        (self.directory / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.management_port}\n"
            # the management API's statistics every 500 ms (5 s by default), for the test's waits
            "collect_statistics_interval = 500\n"
        )
        env = {
            **os.environ,
            "HOME": str(self.directory),  # its own Erlang cookie
            "RABBITMQ_NODENAME": f"messenger-test-{self.amqp_port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.directory / "plugins-expand"),
            "RABBITMQ_PID_FILE": str(self.directory / "pid"),
        }
        with (self.directory / "node.log").open("wb") as log:
            self.process = subprocess.Popen(
                [self.script],
                cwd=self.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._up, timeout=timeout, interval=0.5, what="the RabbitMQ node's management API")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"rabbitmq-server exited with {self.process.returncode}:\n{self.log()}")
        request = urllib.request.Request(f"{self.management_url}/api/overview")
        request.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the node's process group (the script and its Erlang VM); SIGKILL after 30 s."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # anything of the node left behind
            self.process = None

    def __enter__(self) -> RabbitmqServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
