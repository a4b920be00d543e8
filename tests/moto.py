"""A moto server (moto's SQS, in server mode) on a free loopback port, for the SQS tests.

Started as its own process (``python -m moto.server``, what ``moto_server`` runs), so that the
test's workers and web servers reach it over HTTP as they would reach SQS; stopped after.
"""

from __future__ import annotations

import os
import sys

from tests.loopback import LoopbackServer

#: The environment boto3 needs to talk to moto: any credentials, one region.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer(LoopbackServer):
    """``with MotoServer(log_path) as moto: moto.endpoint_url`` — a moto server while the block runs."""

    label = "moto's server"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def environment(self) -> dict[str, str]:
        return {**os.environ, **AWS_ENV}
