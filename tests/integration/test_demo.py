"""The demo project, run the way README.md says: on the sync transport, then on RabbitMQ."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import requests

from .conftest import delete_queues
from .processes import ROOT, Process, free_port, start, start_server, start_worker, wait_for


def readme_demo_command() -> str:
    """The first command of README.md's Quick start block."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S)
    assert block is not None, "README.md has no Quick start bash block"
    return block.group(1).strip().splitlines()[0]


def demo_env(**extra: str) -> dict[str, str]:
    return {"DJANGO_SETTINGS_MODULE": "testproject.settings", "PYTHONPATH": str(ROOT), **extra}


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def test_the_readme_demo_command_serves_a_reset_request_end_to_end(tmp_path, log_dir, processes):
    # Given the README's first command, with the install step already done by the test setup
    command = readme_demo_command()
    steps = [step.strip() for step in command.split("&&")]
    assert any(step.startswith("pip install") for step in steps)
    run_steps = [step for step in steps if step.startswith("python manage.py")]
    assert run_steps[-1].startswith("python manage.py runserver")
    port = free_port()
    run_steps[-1] = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", run_steps[-1]) + " --noreload"
    database = tmp_path / "demo.sqlite3"
    env = demo_env(DEMO_SQLITE_PATH=str(database))
    for step in run_steps[:-1]:
        manage(env, *step.split()[2:])
    manage(env, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('ada')")

    # When the demo runs as the README says and a reset is requested over HTTP
    processes.append(start("demo", [sys.executable, *run_steps[-1].split()[1:]], env, log_dir))
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), timeout=60, what="the demo server")
    response = requests.post(
        f"http://127.0.0.1:{port}/reset-password-requests/", json={"username": "ada"}, timeout=15
    )

    # Then it answers 202 and the sync handler has issued a token in the database
    assert response.status_code == 202
    assert response.content == b""
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT message_id FROM accounts_passwordresettoken").fetchall()
    assert [uuid.UUID(row[0]) for row in rows] == [uuid.UUID(response.headers["Messenger-Message-Id"])]


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
        return True
    except requests.ConnectionError:
        return False


@pytest.fixture
def demo_database() -> Iterator[str]:
    name = f"messenger_demo_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_demo_on_rabbitmq_with_a_worker(rabbitmq, demo_database, log_dir, processes):
    queue = f"messenger-demo-{uuid.uuid4().hex[:12]}"
    env = demo_env(
        MESSENGER_BROKER_URL="amqp://guest:guest@127.0.0.1:5672/%2F",
        MESSENGER_QUEUE=queue,
        DEMO_DB="postgres",
        DEMO_DB_NAME=demo_database,
    )
    try:
        manage(env, "migrate", "--noinput")
        manage(
            env, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('ada')"
        )
        processes.append(start_worker(env, log_dir, queues=[queue]))
        server, url = start_server(env, log_dir, wsgi="testproject.wsgi:application")
        processes.append(server)

        def query(sql: str) -> list[tuple[object, ...]]:
            with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={demo_database}") as connection:
                return connection.execute(sql).fetchall()

        # A password reset: 202 now, a token once the worker handled it
        response = requests.post(f"{url}/reset-password-requests/", json={"username": "ada"}, timeout=15)
        assert response.status_code == 202
        wait_for(lambda: query("SELECT token FROM accounts_passwordresettoken"), what="the reset token")

        # The book resource: each write applied by the worker
        assert (
            requests.post(f"{url}/books/", json={"title": "Emma", "author": "Austen"}, timeout=15).status_code
            == 202
        )
        [(book_id,)] = wait_for(lambda: query("SELECT id FROM library_book"), what="the book")
        assert (
            requests.patch(f"{url}/books/{book_id}/", json={"title": "Persuasion"}, timeout=15).status_code
            == 202
        )
        wait_for(lambda: query("SELECT 1 FROM library_book WHERE title = 'Persuasion'"), what="the PATCH")
        assert requests.get(f"{url}/books/", timeout=15).json()[0]["title"] == "Persuasion"
        assert requests.delete(f"{url}/books/{book_id}/", timeout=15).status_code == 202
        wait_for(lambda: not query("SELECT 1 FROM library_book"), what="the DELETE")
    finally:
        for process in processes:
            process.stop()
        delete_queues(queue)
