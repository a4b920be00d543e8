"""Google's Pub/Sub emulator on a free loopback port, for the Pub/Sub tests.

Started as its own process (``cloud-pubsub-emulator --host=127.0.0.1 --port=PORT``, Java, with
``JAVA_OPTS=-Xmx256m``), so that the test's workers and web servers reach it over gRPC as they
would reach Pub/Sub (``PUBSUB_EMULATOR_HOST``); stopped after. Its state is in memory: every
topic of a run goes with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

from tests.moto import _free_port, _listening

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


class PubSubEmulator:
    """``with PubSubEmulator() as emulator: emulator.host`` — an emulator while the block runs."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = _free_port()
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """What ``PUBSUB_EMULATOR_HOST`` takes."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PubSubEmulator:
        output = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.popen = subprocess.Popen(
            [str(EMULATOR), "--host=127.0.0.1", f"--port={self.port}"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "JAVA_OPTS": os.environ.get("MESSENGER_PUBSUB_JAVA_OPTS", "-Xmx256m")},
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"The Pub/Sub emulator exited with {self.popen.returncode} before it listened."
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"The Pub/Sub emulator did not listen on {self.host} in {timeout}s.")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def __enter__(self) -> PubSubEmulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
