"""How the end-to-end handlers report when they started: one UDP datagram to the benchmark."""

from __future__ import annotations

import os
import socket
import threading

_local = threading.local()
_PORT = int(os.environ.get("BENCH_E2E_UDP_PORT", "0"))


def report_start(variant: str, sent: float, started: float) -> None:
    """Send ``variant sent started`` to the benchmark's UDP port on loopback, if one is set."""
    if not _PORT:
        return
    sock = getattr(_local, "sock", None)
    if sock is None:
        sock = _local.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(f"{variant} {sent!r} {started!r}".encode(), ("127.0.0.1", _PORT))
