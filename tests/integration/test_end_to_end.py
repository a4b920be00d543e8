"""HTTP -> gunicorn -> RabbitMQ -> ``rundramatiq`` worker -> database, all real processes.

The end-to-end cases every broker must pass (a POST handled, model writes, fan-out, delays,
retries, poison, an unreachable broker, a killed worker) are the contract suite,
``tests/integration/contract/``, run on each broker; what stays here is RabbitMQ-only.
"""

from __future__ import annotations

import pytest
import requests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]


def post(url: str, json: dict[str, object]) -> requests.Response:
    return requests.post(url, json=json, timeout=15)


def test_invalid_input_is_400_and_nothing_is_handled(server):
    response = post(f"{server}/pings/", {"text": ""})

    assert response.status_code == 400
    assert "text" in response.json()
