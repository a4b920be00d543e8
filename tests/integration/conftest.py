"""Fixtures of the integration tests: real RabbitMQ, real worker and server processes.

RabbitMQ must listen on 127.0.0.1:5672. Without it these tests are skipped on a
developer's machine and fail in CI (``CI`` set), as Dramatiq's own suite does.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.amqp import RABBITMQ
from tests.faultproxy import FaultProxy

from .processes import ROOT, Process, port_open, start_server, start_worker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    if not port_open(5672):
        if os.environ.get("CI"):
            pytest.fail("RabbitMQ is not listening on 127.0.0.1:5672 (CI must start it).")
        pytest.skip("RabbitMQ is not listening on 127.0.0.1:5672.")
    return AMQP_URL


def delete_queues(*names: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name in names:
            for queue in (name, f"{name}.DQ", f"{name}.XQ"):
                channel.queue_delete(queue)
    finally:
        connection.close()


@pytest.fixture(scope="session")
def queue_name(rabbitmq: str) -> Iterator[str]:
    """A queue of this test run only, deleted (with its delay and dead-letter queues) at the end."""
    name = f"messenger-it-{uuid.uuid4().hex[:12]}"
    yield name
    delete_queues(name)


@pytest.fixture
def own_queue(rabbitmq: str) -> Iterator[str]:
    """A queue of this test only (for its own workers), deleted with its DQ and XQ after it."""
    name = f"messenger-own-{uuid.uuid4().hex[:12]}"
    yield name
    delete_queues(name)


@pytest.fixture
def workers() -> Iterator[list[Process]]:
    """Worker processes the test starts itself: append them; they are killed after the test."""
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def process_env(django_db_setup: Any, django_db_blocker: Any, queue_name: str) -> dict[str, str]:
    """The environment of the processes: the test database, this run's queue."""
    from django.db import connection

    return {
        "DJANGO_SETTINGS_MODULE": "tests.integration.settings",
        "MESSENGER_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "MESSENGER_QUEUE": queue_name,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


@pytest.fixture(scope="session")
def worker(process_env: dict[str, str], log_dir: Path, queue_name: str) -> Iterator[Process]:
    process = start_worker(process_env, log_dir, queues=[queue_name])
    yield process
    process.stop()


@pytest.fixture(scope="session")
def server(process_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    process, url = start_server(process_env, log_dir, wsgi="tests.integration.wsgi:application")
    yield url
    process.stop()


# --- the browser tests (test_dashboard_browser.py, test_browsable_browser.py) ----------------------


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where browser tests save their screenshots: ``artifacts/`` or ``MESSENGER_ARTIFACTS_DIR``."""
    directory = Path(os.environ.get("MESSENGER_ARTIFACTS_DIR") or ROOT / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def static_server(process_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """The integration server (gunicorn), serving the static files (the admin's, DRF's) too."""
    process, url = start_server(process_env, log_dir, wsgi="tests.integration.dashboard_wsgi:application")
    yield url
    process.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium driven by Selenium: skipped without it, failed in CI (.ci/run installs it)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        reason = "Chromium is not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: .ci/run installs it.")
        pytest.skip(f"{reason}.")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(60)
    session.implicitly_wait(10)  # a loaded machine: elements may take a while
    yield session
    session.quit()


# --- the publisher fault tests (test_publishing_faults.py) -----------------------------------------


@pytest.fixture
def queue(own_queue: str) -> str:
    """A queue of this test only, deleted with its DQ and XQ after it (``own_queue`` by another name)."""
    return own_queue


@pytest.fixture
def proxy(rabbitmq: str) -> Iterator[FaultProxy]:
    """A FaultProxy in front of RabbitMQ: publish through ``proxy.url()`` to inject network faults."""
    with FaultProxy(upstream=RABBITMQ) as running:
        yield running
