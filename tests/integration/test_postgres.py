"""What the PostgreSQL transport adds to the contract suite: dispatch is transactional, and a
silent database cuts the INSERT at PUBLISH_TIMEOUT (django_messenger/brokers/postgres.py).

Real processes on the machine's PostgreSQL: a ``rundramatiq`` worker, gunicorn, and
``manage.py shell`` dispatching from code, all on the queue tables of a schema of this run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from django_messenger.models import FailedMessage
from django_messenger.retries import RETRY_NOT_ENQUEUED
from tests.faultproxy import FaultProxy
from tests.testapp.messages import Work
from tests.testapp.models import Effect

from .contract.brokers import Postgres, enqueue
from .processes import Process, manage, start_server, start_worker, wait_for
from .rabbit import envelope_message

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISH_TIMEOUT = 1.5
WSGI = "tests.integration.wsgi:application"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    broker = Postgres()
    broker.require()
    yield broker
    broker.cleanup()


@pytest.fixture(scope="module")
def pg_env(postgres: Postgres, process_env: dict[str, str]) -> dict[str, str]:
    return {
        **process_env,
        **postgres.env(),
        "MESSENGER_QUEUE": postgres.new_queue(),
        "MESSENGER_PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
    }


@pytest.fixture(scope="module")
def pg_worker(pg_env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    process = start_worker(pg_env, log_dir, queues=[pg_env["MESSENGER_QUEUE"]], threads=2)
    yield process
    process.stop()


def handled(message_id: str | uuid.UUID) -> bool:
    return Effect.objects.filter(handler="ping", message_id=message_id).exists()


#: Run by ``manage.py shell`` in the processes' settings: dispatch from code in two transactions.
DISPATCH_IN_TRANSACTIONS = """
import json
import psycopg
from django.db import transaction
from django_messenger import bus
from django_messenger.stamps import SentStamp
from tests.testapp.messages import Ping

URL, SCHEMA = {url!r}, {schema!r}


def rows(broker_message_id):
    query = psycopg.sql.SQL("SELECT count(*) FROM {{}}.queue WHERE message_id = %s").format(
        psycopg.sql.Identifier(SCHEMA)
    )
    with psycopg.connect(URL, autocommit=True) as other:
        return other.execute(query, (broker_message_id,)).fetchone()[0]


class RolledBack(Exception):
    pass


try:
    with transaction.atomic():
        rolled_back = bus.dispatch(Ping(text="rolled back"))
        raise RolledBack
except RolledBack:
    pass
with transaction.atomic():
    committed = bus.dispatch(Ping(text="committed"))
    sent = committed.last(SentStamp)
    seen_before_commit = rows(sent.broker_message_id)
print(json.dumps({{
    "rolled_back": str(rolled_back.message_id),
    "rolled_back_broker_id": rolled_back.last(SentStamp).broker_message_id,
    "committed": str(committed.message_id),
    "committed_broker_id": sent.broker_message_id,
    "seen_before_commit": seen_before_commit,
    "seen_after_commit": rows(sent.broker_message_id),
}}))
"""


def test_a_dispatch_inside_a_transaction_exists_if_and_only_if_it_commits(postgres, pg_env, pg_worker):
    # Given a worker, and code dispatching inside transaction.atomic() (once rolled back, once committed)
    script = DISPATCH_IN_TRANSACTIONS.format(url=postgres.url(), schema=postgres.schema)
    done = manage(pg_env, "shell", "-c", script)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    # Then the message was written in the caller's transaction: sent at the dispatch (a SentStamp),
    # invisible to others until the commit, there once committed
    assert result["seen_before_commit"] == 0
    assert result["seen_after_commit"] == 1
    # And the committed one is handled by the worker
    wait_for(lambda: handled(result["committed"]), what="the committed dispatch")
    # And the rolled-back one never existed: no row, never handled
    assert postgres.rows_with_id(result["rolled_back_broker_id"]) == 0
    time.sleep(2)  # four polls of the worker
    assert not handled(result["rolled_back"])


def test_a_write_under_atomic_requests_is_committed_before_its_202(pg_env, pg_worker, log_dir):
    # Given ATOMIC_REQUESTS: messenger's views run outside it, so the INSERT commits before the answer
    env = {**pg_env, "MESSENGER_ATOMIC_REQUESTS": "1"}
    server, url = start_server(env, log_dir, wsgi=WSGI)
    try:
        response = requests.post(f"{url}/pings/", json={"text": "atomic requests"}, timeout=15)
        assert response.status_code == 202, response.text
        wait_for(lambda: handled(response.headers["Messenger-Message-Id"]), what="the ping")
    finally:
        server.stop()


def test_a_silent_database_cuts_the_insert_at_publish_timeout(postgres, pg_env, pg_worker, log_dir):
    # Given a server keeping its database connection open between requests (CONN_MAX_AGE),
    # through a proxy, and one write that opened that connection
    with FaultProxy(upstream=("127.0.0.1", postgres.port)) as proxy:
        env = {**pg_env, **postgres.env(port=proxy.port), "MESSENGER_CONN_MAX_AGE": "60"}
        server, url = start_server(env, log_dir, wsgi=WSGI, threads=1)
        try:
            first = requests.post(f"{url}/pings/", json={"text": "opens the connection"}, timeout=15)
            assert first.status_code == 202, first.text

            # When the database goes silent on that open connection
            proxy.blackhole()
            started = time.monotonic()
            response = requests.post(f"{url}/pings/", json={"text": "silence"}, timeout=30)
            elapsed = time.monotonic() - started

            # Then the INSERT is cut at PUBLISH_TIMEOUT (not psycopg's connect_timeout: the
            # connection was open): 503 with Retry-After
            print(f"[postgres] silent open connection: {response.status_code} after {elapsed:.2f}s")
            assert response.status_code == 503, response.text
            assert int(response.headers["Retry-After"]) > 0
            assert PUBLISH_TIMEOUT - 0.1 < elapsed < PUBLISH_TIMEOUT + 2.0
            assert "PUBLISH_TIMEOUT" in server.log()  # the reason is logged, not sent

            # When it answers again, Then the next write reconnects and is accepted
            proxy.restore()
            after = requests.post(f"{url}/pings/", json={"text": "after the silence"}, timeout=15)
            assert after.status_code == 202, after.text
            after_id = after.headers["Messenger-Message-Id"]
            wait_for(lambda: handled(after_id), what="the ping after the silence")
        finally:
            server.stop()


def test_a_message_running_when_the_database_goes_away_has_its_failure_stored_once_it_is_back(
    postgres, pg_env, log_dir, workers
):
    # Given a worker whose database (its broker too) runs through a proxy, running a 3 s handler
    with FaultProxy(upstream=("127.0.0.1", postgres.port)) as proxy:
        env = {
            **pg_env,
            **postgres.env(port=proxy.port),
            "MESSENGER_QUEUE": postgres.new_queue(),
            "MESSENGER_PG_HEARTBEAT_TTL": "60",
        }
        queue = env["MESSENGER_QUEUE"]
        worker = start_worker(env, log_dir, queues=[queue], threads=1)
        workers.append(worker)
        envelope, message = envelope_message(queue, "tests.testapp.handlers.work", Work(n=1, sleep_ms=3000))
        enqueue(postgres, message)
        wait_for(
            lambda: Effect.objects.filter(handler="work-started", message_id=envelope.message_id).exists(),
            what="the handler to start",
        )

        # When the database goes away mid-run: the handler fails, its retry cannot be enqueued,
        # and its failure can be neither stored nor held (the broker is the database)
        proxy.reset()

        # Then the message is not dead-lettered without its failure: it stays claimed, and the
        # worker tries again
        wait_for(lambda: "is not dead-lettered yet" in worker.log(), timeout=60, what="a refused rejection")
        assert postgres.rows(queue, "consumed") == 1
        assert not FailedMessage.objects.filter(message_id=envelope.message_id).exists()

        # When the database is back, Then the failure is stored, and the message dead-lettered
        proxy.restore()
        failed = wait_for(
            lambda: FailedMessage.objects.filter(message_id=envelope.message_id).first(),
            timeout=60,
            what="the failure to be stored",
        )
        assert failed.error.startswith(RETRY_NOT_ENQUEUED), failed.error
        wait_for(lambda: postgres.dead_letters(queue) == 1, timeout=30, what="the dead letter")
