"""Smoke runs of the benchmark scripts (``--quick``), so that they cannot rot.

Each test runs one script as the README says, with a tiny load, and checks only that it
finished and printed its table: no test here asserts a time. The scripts that need RabbitMQ
skip without it on a developer's machine and fail in CI (``CI`` set), like the integration
tests; the HTTP benchmark also needs ``wrk`` (``apt-get install -y wrk``) and skips, with
the reason, wherever it is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def rabbitmq_listening() -> bool:
    return port_open(5672)


@pytest.fixture
def rabbitmq() -> None:
    if not rabbitmq_listening():
        if os.environ.get("CI"):
            pytest.fail("RabbitMQ is not listening on 127.0.0.1:5672 (CI must start it).")
        pytest.skip("RabbitMQ is not listening on 127.0.0.1:5672.")


@pytest.fixture
def redis_server() -> None:
    if not port_open(6379):
        if os.environ.get("CI"):
            pytest.fail("Redis is not listening on 127.0.0.1:6379 (CI must start it).")
        pytest.skip("Redis is not listening on 127.0.0.1:6379.")


def run_script(name: str, *args: str, timeout: float = 180) -> str:
    """Run ``python -m benchmarks.<name> --quick``; return its output (skip on status 2)."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode == 2 and "SKIPPED:" in result.stderr:
        pytest.skip(result.stderr.strip())
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def test_encoding_benchmark_prints_its_table() -> None:
    # Given no service at all
    # When the encoding benchmark runs its smoke mode
    out = run_script("encoding")

    # Then it printed a row per message kind and operation
    assert "### Encoding" in out
    assert "| dataclass Ping" in out and "| model Item" in out and "decode_envelope" in out


def test_worker_profile_prints_its_table() -> None:
    # Given no service at all
    # When the in-process worker profile runs its smoke mode
    out = run_script("profile_worker")

    # Then it printed the cost of the three paths
    assert "### In-process worker path" in out
    assert "| messenger" in out and "| dramatiq" in out and "| plain" in out


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_http_dispatch_benchmark_prints_its_tables(rabbitmq: None) -> None:
    # Given RabbitMQ and wrk
    # When the HTTP benchmark runs its smoke mode (sync workers, 1 s a variant)
    out = run_script("http_dispatch")

    # Then it printed the requests/s of every variant and the ratios with their targets
    assert "### HTTP dispatch, gunicorn sync" in out
    for row in ("| (a) bare", "| (b) dramatiq", "| (c) dramatiq", "| (d) messenger", "| (e) messenger"):
        assert row in out
    assert "| (g) messenger, outbox" in out and "(g)/(d) messenger outbox" in out
    assert "### Ratios" in out and ">= 0.95x" in out


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_targets_print_both_of_issue_8s_ratios_in_one_table(rabbitmq: None) -> None:
    # Given RabbitMQ and wrk
    # When the targets script runs both benchmarks' smoke modes
    out = run_script("targets", timeout=600)

    # Then it printed both scripts' tables, and one table with both targets
    assert "### Worker drain" in out and "### HTTP dispatch, gunicorn sync" in out
    summary = out.split("### Issue 8's speed targets")[1]
    assert "worker: msg/s, messenger / plain actor, same project" in summary and ">= 0.9x" in summary
    assert "HTTP sync: (d)/(b) messenger confirmed / dramatiq confirmed" in summary and ">= 0.95x" in summary


@pytest.mark.integration
def test_worker_benchmark_prints_its_table(rabbitmq: None) -> None:
    # Given RabbitMQ
    # When the worker benchmark drains its smoke load with each worker
    out = run_script("worker")

    # Then it printed messages/s, CPU per message and RSS of each, and the ratios
    assert "### Worker drain" in out and "CPU µs/msg" in out
    for row in ("| messenger", "| actor", "| dramatiq", "| django-dramatiq"):
        assert row in out
    assert "### Ratios" in out and "msg/s, messenger / plain actor, same project" in out
    assert "CPU/msg, messenger / plain dramatiq" in out


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_http_dispatch_benchmark_on_redis_prints_its_tables(redis_server: None) -> None:
    # Given Redis and wrk
    # When the HTTP benchmark runs its smoke mode on Redis
    out = run_script("http_dispatch", "--broker", "redis")

    # Then every sending view ran on Redis: the variants that wait for the broker, and a note
    # for those that exist only on RabbitMQ
    assert ", Redis " in out.splitlines()[0]  # the header names the server measured
    assert "### HTTP dispatch, gunicorn sync, redis" in out
    for row in ("| (a) bare", "| (b) dramatiq", "| (d) messenger"):
        assert row in out
    assert "| (c)" not in out and "| (e)" not in out and "| (f)" not in out
    assert "(c), (e) skipped: no unconfirmed variants on redis" in out
    assert "### Ratios on redis" in out and "(d)/(b)" in out


@pytest.mark.integration
def test_worker_benchmark_on_redis_prints_its_table(redis_server: None) -> None:
    # Given Redis
    # When the worker benchmark drains its smoke load from Redis with each worker
    out = run_script("worker", "--broker", "redis")

    # Then it printed messages/s and RSS of each, the ratios, and why Celery is not in them
    assert "### Worker drain on redis" in out
    for row in ("| messenger", "| dramatiq", "| django-dramatiq"):
        assert row in out
    assert "### Ratios on redis" in out and "msg/s, messenger / plain dramatiq" in out
    assert "celery skipped: the Celery variant runs on RabbitMQ only" in out


@pytest.mark.integration
def test_end_to_end_benchmark_prints_its_table(rabbitmq: None) -> None:
    # Given RabbitMQ
    # When the end-to-end benchmark sends its smoke load through both paths
    out = run_script("end_to_end")

    # Then it printed the percentiles of both and their ratio
    assert "### End to end" in out
    assert "| messenger" in out and "| dramatiq" in out
    assert "p50, messenger / dramatiq" in out


@pytest.mark.integration
def test_dispatch_profile_prints_its_table(rabbitmq: None) -> None:
    # Given RabbitMQ
    # When the in-process dispatch profile runs its smoke mode
    out = run_script("profile_dispatch")

    # Then it printed the cost of each variant
    assert "### In-process POST" in out
    for row in ("| bare", "| dramatiq", "| messenger"):
        assert row in out


@pytest.mark.integration
def test_worker_benchmark_on_postgres_prints_its_table() -> None:
    # Given PostgreSQL (the test database's server; the run's schema is its own, dropped after)
    if not port_open(5432):
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432.")
    # When the worker benchmark drains its smoke load from dramatiq-postgres' table with each worker
    out = run_script("worker", "--broker", "postgres")

    # Then it printed messages/s and RSS of each and the ratios
    assert "### Worker drain on postgres" in out
    for row in ("| messenger", "| dramatiq", "| django-dramatiq"):
        assert row in out
    assert "### Ratios on postgres" in out and "msg/s, messenger / plain dramatiq" in out
