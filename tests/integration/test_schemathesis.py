"""schemathesis against the demo, served by gunicorn on loopback: every check, stateful included.

The demo's schema is the one it serves at ``/schema/`` (drf-spectacular with messenger's
extension, docs/openapi.md). Two runs: on the ``sync`` transport (handlers in the request, SQLite),
and on RabbitMQ with a ``rundramatiq`` worker (PostgreSQL, shared by both processes). Each must
find no server error and no answer that contradicts the schema. ``SCHEMATHESIS_MAX_EXAMPLES``
(default 20) bounds the examples per operation and phase; ``SCHEMATHESIS_SEED`` replays a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .conftest import delete_queues
from .processes import ROOT, Process, manage, start_server, start_worker, wait_for
from .rabbit import queue_depth

MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "20")
#: Every warning schemathesis shows by default but ``missing_test_data``: the status resource
#: (``messages/{message_id}/``) answers 404 to any id schemathesis can make up, as it must (an id
#: reads only with its sender's signed token); its 404s are still checked against the schema.
WARNINGS = ",".join(
    (
        "missing_auth",
        "base_url_mismatch",
        "validation_mismatch",
        "missing_deserializer",
        "unused_openapi_auth",
        "unsupported_regex",
        "method_not_allowed",
        "constants_extraction",
        "unmatched_filter",
        "unresolvable_reference",
        "rate_limited",
        "dictionary_mismatch",
        "timeout_units",
    )
)


def demo_env(**extra: str) -> dict[str, str]:
    # DEBUG off, as in production: Django's HTML debug pages are not the API's answers.
    return {
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "DJANGO_DEBUG": "0",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def migrate(env: dict[str, str]) -> None:
    result = manage(env, "migrate", "--noinput")
    assert result.returncode == 0, result.stdout + result.stderr


def schemathesis(url: str, workdir: Path, *, hooks: str = "") -> subprocess.CompletedProcess[str]:
    """``schemathesis run`` on the demo's schema with every check and every phase it has;
    ``hooks`` names a module of schemathesis hooks (``SCHEMATHESIS_HOOKS``)."""
    args = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/schema/",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        MAX_EXAMPLES,
        "--warnings",
        WARNINGS,
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
    ]
    if os.environ.get("SCHEMATHESIS_SEED"):
        args += ["--seed", os.environ["SCHEMATHESIS_SEED"]]
    return subprocess.run(
        args,
        cwd=workdir,  # nothing written into the repository
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": hooks},
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_no_issues(result: subprocess.CompletedProcess[str], *logs: Process) -> None:
    output = result.stdout + result.stderr
    server_logs = "\n".join(f"--- {process.name} log ---\n{process.log()[-5000:]}" for process in logs)
    assert result.returncode == 0, f"{output}\n{server_logs}"
    assert "No issues found" in output, output
    assert "Stateful" in output, "the stateful phase did not run"


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def test_schemathesis_finds_nothing_on_the_sync_transport(tmp_path, log_dir, processes):
    # Given the demo on the sync transport, handlers running inside the request
    env = demo_env(DEMO_SQLITE_PATH=str(tmp_path / "demo.sqlite3"))
    migrate(env)
    server, url = start_server(env, log_dir, wsgi="testproject.wsgi:application")
    processes.append(server)

    # When schemathesis runs every check against its schema (a new Idempotency-Key a request)
    result = schemathesis(url, tmp_path, hooks="tests.integration.schemathesis_hooks")

    # Then it finds no server error and no answer that contradicts the schema
    assert_no_issues(result, server)


@pytest.fixture
def demo_database() -> Iterator[str]:
    name = f"messenger_openapi_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_schemathesis_finds_nothing_on_rabbitmq_with_a_worker(
    rabbitmq, demo_database, tmp_path, log_dir, processes
):
    # Given the demo on RabbitMQ, a worker handling what the web process sends
    queue = f"messenger-openapi-{uuid.uuid4().hex[:12]}"
    env = demo_env(
        MESSENGER_BROKER_URL="amqp://guest:guest@127.0.0.1:5672/%2F",
        MESSENGER_QUEUE=queue,
        DEMO_DB="postgres",
        DEMO_DB_NAME=demo_database,
    )
    try:
        migrate(env)
        worker = start_worker(env, log_dir, queues=[queue])
        processes.append(worker)
        server, url = start_server(env, log_dir, wsgi="testproject.wsgi:application")
        processes.append(server)

        # When schemathesis runs every check against its schema, a read after a 202 DELETE
        # waiting until the worker applied it (schemathesis_hooks.py)
        result = schemathesis(url, tmp_path, hooks="tests.integration.schemathesis_hooks")

        # Then it finds no server error and no answer that contradicts the schema
        assert_no_issues(result, server, worker)
        # And the worker handled every message the API accepted without an error
        wait_for(lambda: queue_depth(queue) == 0, timeout=180, what="the worker to drain the queue")
        worker.stop()  # finishes the messages in hand
        assert "unhandled exception" not in worker.log(), worker.log()[-5000:]
        assert "Traceback" not in worker.log(), worker.log()[-5000:]
    finally:
        for process in processes:
            process.stop()
        delete_queues(queue)
