"""Google's Pub/Sub emulator on a free loopback port, for the Pub/Sub tests.

Started as its own process (``cloud-pubsub-emulator --host=127.0.0.1 --port=PORT``, Java, with
``JAVA_OPTS=-Xmx256m``), so that the test's workers and web servers reach it over gRPC as they
would reach Pub/Sub (``PUBSUB_EMULATOR_HOST``); stopped after. Its state is in memory: every
topic of a run goes with it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.loopback import LoopbackServer

#: The emulator the Google Cloud CLI installs (its ``pubsub-emulator`` component).
EMULATOR = Path(
    os.environ.get(
        "MESSENGER_PUBSUB_EMULATOR",
        "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    )
)
#: The project id of the tests' topics (the emulator takes any valid one).
PROJECT_ID = "messenger-test"


def require_emulator() -> None:
    """Skip (fail in CI) when the emulator or Java is missing."""
    missing = None
    if not EMULATOR.exists():
        missing = (
            f"Google's Pub/Sub emulator is not installed at {EMULATOR} (gcloud's pubsub-emulator component)"
        )
    elif shutil.which("java") is None:
        missing = "Java, which Google's Pub/Sub emulator needs, is not on PATH"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must have it.")
        pytest.skip(f"{missing}.")


class PubSubEmulator(LoopbackServer):
    """``with PubSubEmulator() as emulator: emulator.host`` — an emulator while the block runs."""

    label = "The Pub/Sub emulator"
    poll_interval = 0.2
    stop_timeout = 15.0

    @property
    def host(self) -> str:
        """What ``PUBSUB_EMULATOR_HOST`` takes."""
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(EMULATOR), "--host=127.0.0.1", f"--port={self.port}"]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "JAVA_OPTS": os.environ.get("MESSENGER_PUBSUB_JAVA_OPTS", "-Xmx256m")}
