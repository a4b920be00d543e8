"""Fixtures of the contract suite: every fixture here depends on ``contract_broker``, which is
parametrised over the brokers of :data:`.brokers.BROKERS`, so each test runs once per broker.

The processes of one broker (a worker, a server) live as long as its tests; pytest runs the
tests broker by broker and stops one broker's processes before it starts the next one's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultproxy import FaultProxy

from ..processes import Process, start_server, start_worker
from .brokers import BROKERS, ContractBroker

#: PUBLISH_TIMEOUT of the contract's processes (s); on Redis, half of it is each socket timeout.
PUBLISH_TIMEOUT = 1.5
#: DELAY_HOP of the contract's processes (s): a delay of a few seconds takes several hops.
DELAY_HOP = 1.0


@pytest.fixture(scope="session", params=list(BROKERS))
def contract_broker(request: pytest.FixtureRequest) -> Iterator[ContractBroker]:
    """The broker under test, with a namespace or queues of this run only, cleaned up after."""
    broker = BROKERS[request.param]()
    broker.require()
    yield broker
    broker.cleanup()


def broker_env(broker: ContractBroker, process_env: dict[str, str], queue: str) -> dict[str, str]:
    return {
        **process_env,
        **broker.env(),
        "MESSENGER_QUEUE": queue,
        "MESSENGER_PUBLISH_TIMEOUT": str(PUBLISH_TIMEOUT),
        "MESSENGER_DELAY_HOP": str(DELAY_HOP),
    }


@pytest.fixture(scope="session")
def contract_env(contract_broker: ContractBroker, process_env: dict[str, str]) -> dict[str, str]:
    """The environment of the broker's shared processes: the broker, a queue of its own."""
    return broker_env(contract_broker, process_env, contract_broker.new_queue())


@pytest.fixture(scope="session")
def contract_worker(contract_env: dict[str, str], log_dir: Path) -> Iterator[Process]:
    process = start_worker(contract_env, log_dir, queues=[contract_env["MESSENGER_QUEUE"]], threads=4)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def contract_server(contract_env: dict[str, str], log_dir: Path, contract_worker: Process) -> Iterator[str]:
    """A server on the broker, with the broker's worker running."""
    process, url = start_server(contract_env, log_dir, wsgi="tests.integration.wsgi:application")
    yield url
    process.stop()


@pytest.fixture
def own_env(contract_broker: ContractBroker, process_env: dict[str, str]) -> dict[str, str]:
    """The environment of processes on a queue of this test only (for workers it starts itself)."""
    return broker_env(contract_broker, process_env, contract_broker.new_queue())


@pytest.fixture
def broker_proxy(contract_broker: ContractBroker) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the broker's server: faults for one test's processes only (on Kafka,
    for every client of the run: see ContractBroker.fault_proxy)."""
    with contract_broker.fault_proxy() as proxy:
        yield proxy
