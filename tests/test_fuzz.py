"""Random JSON thrown at the demo's write endpoints: never a 500, and a 4xx dispatches nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from django_messenger.testing import capture_dispatched
from testproject.library.models import Book

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Bodies that look like the resources, with fields of any type and shape, and anything else.
book_like = st.fixed_dictionaries(
    {},
    optional={
        name: json_values | st.text(max_size=300)
        for name in ("title", "author", "isbn", "price", "published", "added_by", "id")
    },
)
reset_like = st.fixed_dictionaries({}, optional={"username": json_values | st.text(max_size=200)})
bodies = st.one_of(book_like, reset_like, json_values)
raw_bodies = st.binary(max_size=200)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(response: Any, dispatched: list[Any]) -> None:
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.content
    if response.status_code == 202:
        assert len(dispatched) == 1
    else:
        assert 400 <= response.status_code < 500
        assert dispatched == []


@pytest.fixture
def book() -> Book:
    return Book.objects.create(title="Dune", author="Frank Herbert")


@FUZZ
@given(body=bodies)
def test_posts_of_random_json(api_client, broker, body):
    for url in ("/demo/reset-password-requests/", "/demo/books/"):
        with capture_dispatched() as dispatched:
            response = api_client.post(url, json.dumps(body), content_type="application/json")
        check(response, dispatched)


@FUZZ
@given(body=bodies, method=st.sampled_from(["put", "patch", "delete"]))
def test_updates_and_deletes_of_random_json(api_client, broker, book, body, method):
    with capture_dispatched() as dispatched:
        response = getattr(api_client, method)(
            f"/demo/books/{book.pk}/", json.dumps(body), content_type="application/json"
        )
    check(response, dispatched)


@FUZZ
@given(
    body=raw_bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)
def test_random_bytes(api_client, broker, body, content_type):
    with capture_dispatched() as dispatched:
        response = api_client.post("/demo/books/", body, content_type=content_type)
    check(response, dispatched)
