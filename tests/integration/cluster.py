"""A RabbitMQ cluster of its own on loopback, for the cluster test (tests/integration/test_cluster.py).

:class:`RabbitCluster` starts ``size`` RabbitMQ nodes of the installed RabbitMQ, each with its
own node name, AMQP and distribution ports, configuration, data and log directories under
one base directory, and joins them into one cluster with ``rabbitmqctl join_cluster``. No
plugin is enabled (no management or Prometheus listener), and the nodes use an Erlang
cookie and an ``epmd`` of their own (on a free port): they can neither see nor be seen by
the machine's own RabbitMQ node (127.0.0.1:5672), which is never touched.

The scripts are run from ``/usr/lib/rabbitmq/bin`` when it exists: Debian's
``/usr/sbin/rabbitmq-server`` wrapper switches to the ``rabbitmq`` user and drops the
environment that places the nodes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .processes import Process, free_port, port_open, start, wait_for

#: Where Debian's package keeps the real scripts (the ones in /usr/sbin are wrappers).
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_script(name: str) -> str | None:
    """The path of the RabbitMQ script ``name`` (``rabbitmq-server``, ``rabbitmqctl``), or None."""
    candidate = RABBITMQ_BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


@dataclass
class Node:
    """One node of the cluster: its name, ports and directory, and its process once started."""

    index: int
    name: str
    amqp_port: int
    dist_port: int
    base: Path
    process: Process | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"


class RabbitCluster:
    """``size`` RabbitMQ nodes on loopback, joined into one cluster, under ``base``."""

    def __init__(self, base: Path, *, size: int = 3) -> None:
        self.base = base
        self.run = secrets.token_hex(4)
        self.epmd_port = free_port()
        self.home = base / "home"
        self.nodes = [
            Node(
                index=index,
                name=f"messenger-{self.run}-{index}@localhost",
                amqp_port=free_port(),
                dist_port=free_port(),
                base=base / f"node{index}",
            )
            for index in range(size)
        ]
        self.epmd: Process | None = None

    # -- environment --------------------------------------------------------------------------

    def cli_env(self) -> dict[str, str]:
        """What ``rabbitmqctl`` and every node share: the cookie (through HOME) and the epmd."""
        return {
            "HOME": str(self.home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            # Not the machine's /etc/rabbitmq/rabbitmq-env.conf (it names the machine's node).
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
        }

    def node_env(self, node: Node) -> dict[str, str]:
        return {
            **self.cli_env(),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.base / "log"),
            "RABBITMQ_PID_FILE": str(node.base / "rabbitmq.pid"),
        }

    def _write_files(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")  # no management, no prometheus listener
        for node in self.nodes:
            (node.base / "log").mkdir(parents=True, exist_ok=True)
            (node.base / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = 127.0.0.1:{node.amqp_port}\n"
                "loopback_users.guest = true\n"
                # A loaded test machine: no disk alarm from a small free-space default.
                "disk_free_limit.absolute = 50MB\n"
            )

    # -- commands -----------------------------------------------------------------------------

    def rabbitmqctl(self, node: Node, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n NODE args``; its output. Raises when it fails."""
        script = rabbitmq_script("rabbitmqctl")
        assert script is not None
        result = subprocess.run(
            [script, "-n", node.name, *args],
            env={**os.environ, **self.cli_env()},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl -n {node.name} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, log_dir: Path, *, timeout: float = 120.0) -> None:
        """Start every node (in parallel), wait for each, then join them to the first."""
        self._write_files()
        epmd = shutil.which("epmd") or "epmd"
        self.epmd = start("epmd", [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"], {}, log_dir)
        wait_for(lambda: port_open(self.epmd_port), timeout=30, what="the cluster's epmd")
        server = rabbitmq_script("rabbitmq-server")
        assert server is not None
        for node in self.nodes:
            node.process = start(f"rabbit{node.index}", [server], self.node_env(node), log_dir)
        for node in self.nodes:
            self.await_node(node, timeout=timeout)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.rabbitmqctl(node, "stop_app")
            self.rabbitmqctl(node, "join_cluster", first.name)
            self.rabbitmqctl(node, "start_app", timeout=timeout)  # returns once the node runs again
        running = self.running_nodes(first)
        if sorted(running) != sorted(node.name for node in self.nodes):
            raise RuntimeError(f"The cluster did not form: running nodes {running}.")

    def await_node(self, node: Node, *, timeout: float) -> None:
        """Wait for ``node`` to accept AMQP connections (its listener opens once the node has booted)."""
        assert node.process is not None
        process = node.process

        def up() -> bool:
            if process.popen.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {node.name} exited:\n{process.log()[-4000:]}")
            return port_open(node.amqp_port)

        wait_for(up, timeout=timeout, interval=0.5, what=f"RabbitMQ node {node.name} to listen")

    def running_nodes(self, node: Node) -> list[str]:
        """The names of the cluster's running nodes, as ``node`` sees them."""
        output = self.rabbitmqctl(node, "eval", "rabbit_nodes:all_running().", "--silent")
        return [name.strip().strip("'") for name in output.strip().strip("[]").split(",") if name.strip()]

    def stop_node(self, node: Node) -> None:
        """Stop ``node`` the way an operator does (``rabbitmqctl stop``); its process ends."""
        self.rabbitmqctl(node, "stop", timeout=120)
        if node.process is not None:
            node.process.popen.wait(60)
            node.process.stopped = True

    def queues(self, node: Node) -> dict[str, tuple[str, int]]:
        """Every queue of the cluster's default vhost: its type, and on how many nodes it is (quorum)."""
        output = self.rabbitmqctl(
            node, "list_queues", "name", "type", "members", "--silent", "--no-table-headers"
        )
        queues = {}
        for line in output.splitlines():
            name, kind, *members = line.split("\t")
            # members: "[node-a@localhost, node-b@localhost, ...]" for a quorum queue, "" for a classic one
            queues[name] = (kind, "".join(members).count("@"))
        return queues

    def stop(self) -> None:
        """Stop every node still running (all at once), then the cluster's epmd; nothing of it is left."""

        def stop(node: Node) -> None:
            # rabbitmq-server, run in the foreground, stops its node gracefully on SIGTERM (as
            # `rabbitmqctl stop` does, without starting a CLI); SIGKILL after 60 s.
            assert node.process is not None
            node.process.stop(timeout=60)

        running = [node for node in self.nodes if node.process is not None and not node.process.stopped]
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            list(pool.map(stop, running))
        if self.epmd is not None:
            self.epmd.stop(timeout=10)
