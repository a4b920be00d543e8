"""Smoke runs of the benchmark scripts (``--quick``), so that they cannot rot.

Each test runs one script as the README says, with a tiny load, and checks only that it
finished and printed its table: no test here asserts a time. The scripts that need RabbitMQ
skip without it on a developer's machine and fail in CI (``CI`` set), like the integration
tests; the HTTP benchmark also needs ``wrk`` (``apt-get install -y wrk``) and skips, with
the reason, wherever it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.loopback import port_open

ROOT = Path(__file__).resolve().parent.parent


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


def postgres() -> None:
    if not port_open(5432):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not listening on 127.0.0.1:5432 (CI must start it).")
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432.")


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_http_dispatch_benchmark_measures_issue_11s_pieces(rabbitmq: None, redis_server: None) -> None:
    # Given RabbitMQ, Redis, PostgreSQL (the run's database is its own, dropped after) and wrk
    postgres()

    # When the HTTP benchmark runs the plain confirmed dispatch and issue 11's pieces, on
    out = run_script("http_dispatch", "--variants", "dhij")

    # Then it printed each piece beside (d), and their ratios to (d)
    for row in ("| (d) messenger", "| (h) messenger, tracked", "| (i) messenger, new Idempotency-Key (db)"):
        assert row in out
    assert "| (j) messenger, new Idempotency-Key (Redis cache)" in out
    for ratio in (
        "(h)/(d) messenger tracked",
        "(i)/(d) messenger new key, db",
        "(j)/(d) messenger new key, Redis",
    ):
        assert ratio in out
    # and every request of (i) and (j) had a key never seen before: each was stored (none was a
    # replay), wrk counting only the requests answered before it stopped
    for key in ("i", "j"):
        found = re.search(rf"\({key}\) sent ([\d,]+) requests with a new Idempotency-Key; ([\d,]+) keys", out)
        assert found, out
        sent, stored = (int(group.replace(",", "")) for group in found.groups())
        assert sent > 0 and stored >= sent


@pytest.mark.integration
def test_worker_benchmark_measures_issue_11s_pieces(rabbitmq: None) -> None:
    # Given RabbitMQ and PostgreSQL (the run's database is its own, dropped after)
    postgres()

    # When the worker benchmark drains messenger's no-op messages plain, tracked and idempotent
    out = run_script("worker", "--variants", "messenger,messenger-tracked,messenger-idempotent")

    # Then it printed each beside messenger, and their ratios to messenger
    for row in ("| messenger ", "| messenger-tracked ", "| messenger-idempotent "):
        assert row in out
    assert (
        "msg/s, messenger tracked / messenger" in out and "CPU/msg, messenger idempotent / messenger" in out
    )
    # and the pieces were on: a status row per tracked message, a record per idempotent one
    for variant, table in (
        ("messenger-tracked", "messagestatus"),
        ("messenger-idempotent", "handledmessage"),
    ):
        found = re.search(
            rf"{variant}: ([\d,]+) messages published, ([\d,]+) django_messenger_{table} rows", out
        )
        assert found, out
        published, rows = (int(group.replace(",", "")) for group in found.groups())
        assert published > 0 and published * 0.9 <= rows <= published


def test_worker_profile_counts_what_tracking_costs_when_off() -> None:
    # Given no service at all
    # When the in-process worker profile counts calls
    out = run_script("profile_worker", "--calls")

    # Then it says what an untracked message costs issue 11's pieces: one look for its stamp
    table = out.split("### Issue 11's pieces when off")[1]
    assert re.search(r"\| tracking\.py: track_stamp\(\)\s+\| 1\.0 ", table), table
    assert "| every call of the run" in table


@pytest.mark.integration
def test_dispatch_profile_counts_what_issue_11s_pieces_cost_when_off(rabbitmq: None) -> None:
    # Given RabbitMQ
    # When the in-process dispatch profile counts the calls of a messenger request
    out = run_script("profile_dispatch", "--calls", "--variants", "messenger")

    # Then it says what a request without a key, to an untracked view, costs each switch
    table = out.split("### Issue 11's pieces when off")[1]
    for gate in ("messenger_tracked", "messenger_idempotency_mode", "_claim_idempotency_key"):
        assert re.search(rf"\| mixins\.py: {gate}\(\)\s+\| 1\.0 ", table), table
