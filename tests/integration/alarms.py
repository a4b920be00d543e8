"""RabbitMQ resource alarms for the fault tests: ``rabbitmqctl`` lowers the memory watermark.

While the alarm is on, RabbitMQ blocks every publishing connection on the machine (consumers
can still receive and ack): keep the window short, and run such tests one at a time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return result.stdout.strip()


def memory_watermark() -> list[str] | None:
    """The arguments of ``set_vm_memory_high_watermark`` that restore the current value."""
    value = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    if re.fullmatch(r"[0-9.]+", value):
        return [value]
    absolute = re.fullmatch(r'\{absolute,\s*"?([^"}]+)"?\}', value)
    if absolute:
        return ["absolute", absolute.group(1)]
    return None


def wait_for_memory_alarm(active: bool, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alarms = rabbitmqctl("eval", "rabbit_alarm:get_alarms().")
        if ("memory" in alarms) == active:
            return
        time.sleep(0.2)
    raise AssertionError(f"RabbitMQ's memory alarm did not become {'active' if active else 'clear'}.")


def restorable_watermark() -> list[str]:
    """The current watermark (to restore after an alarm); skips the test when it cannot be had."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not available to raise a memory alarm.")
    try:
        original = memory_watermark()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"rabbitmqctl does not work here: {exc}")
    if original is None:
        pytest.skip("Cannot read RabbitMQ's vm_memory_high_watermark to restore it.")
    return original


@contextmanager
def memory_alarm() -> Iterator[None]:
    """RabbitMQ's memory alarm is on inside the block; the watermark is restored however it ends."""
    original = restorable_watermark()
    try:
        rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
        wait_for_memory_alarm(active=True)
        yield
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", *original)
        wait_for_memory_alarm(active=False)
