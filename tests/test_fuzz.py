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
def test_posts_of_random_json(api_client, messenger, body):
    for url in ("/demo/reset-password-requests/", "/demo/books/"):
        messenger.clear()  # one fixture for every example: what the last one dispatched is forgotten
        response = api_client.post(url, json.dumps(body), content_type="application/json")
        check(response, messenger.dispatched)


@FUZZ
@given(body=bodies, method=st.sampled_from(["put", "patch", "delete"]))
def test_updates_and_deletes_of_random_json(api_client, messenger, book, body, method):
    messenger.clear()
    response = getattr(api_client, method)(
        f"/demo/books/{book.pk}/", json.dumps(body), content_type="application/json"
    )
    check(response, messenger.dispatched)


@FUZZ
@given(
    body=raw_bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)
def test_random_bytes(api_client, broker, body, content_type):
    with capture_dispatched() as dispatched:
        response = api_client.post("/demo/books/", body, content_type=content_type)
    check(response, dispatched)


# -- hostile shapes: what a parser cannot read safely, for every parser DRF ships --------------

FORM = "application/x-www-form-urlencoded"
BOUNDARY = "fuzz-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def form_body(fields: list[tuple[str, bytes]], content_type: str) -> bytes:
    if content_type == FORM:
        return b"&".join(name.encode() + b"=" + value for name, value in fields)
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (BOUNDARY.encode(), name.encode(), value)
        for name, value in fields
    ]
    return b"".join(parts) + b"--%s--\r\n" % BOUNDARY.encode()


deep_json = st.builds(
    lambda depth, opener: (
        opener * depth + b"1" + {b"[": b"]", b'{"a":': b"}"}[opener] * depth,
        "application/json",
    ),
    st.integers(min_value=5_000, max_value=100_000),  # beyond Python's recursion limit
    st.sampled_from([b"[", b'{"a":']),
)
huge_json_number = st.builds(
    lambda digits, field: (b'{"%s": %s}' % (field.encode(), b"7" * digits), "application/json"),
    st.integers(min_value=4_301, max_value=100_000),
    st.sampled_from(["title", "price", "username", "id"]),
)
non_finite_json = st.builds(
    lambda constant, field: (
        b'{"title": "Dune", "author": "F", "%s": %s}' % (field.encode(), constant),
        "application/json",
    ),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"]),
    st.sampled_from(["title", "price", "username"]),
)
invalid_utf8 = st.builds(
    lambda prefix, bad, field, content_type: (
        (b'{"%s": "%s%s"}' % (field.encode(), prefix, bad), content_type)
        if content_type == "application/json"
        else (
            form_body([("title", b"Dune"), ("author", b"F"), (field, prefix + bad)], content_type),
            content_type,
        )
    ),
    st.text(alphabet="abcxyz019", max_size=8).map(str.encode),
    st.sampled_from([b"\xff", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"%FF", b"%C3%28"]),
    st.sampled_from(["title", "author", "username"]),
    st.sampled_from(["application/json", FORM, MULTIPART]),
).filter(lambda shape: not (shape[1] != FORM and b"%" in shape[0]))
too_many_fields = st.builds(
    lambda count, content_type: (
        form_body([(f"f{i}", b"1") for i in range(count)], content_type),
        content_type,
    ),
    st.integers(min_value=1_001, max_value=3_000),
    st.sampled_from([FORM, MULTIPART]),
)
wrong_content_type = st.builds(
    lambda content_type: (b'{"title": "Dune", "author": "F", "username": "ada"}', content_type),
    st.sampled_from(
        ["text/plain", "application/xml", "", "multipart/form-data", "application/json; charset=bz2_codec"]
    ),
)
hostile = st.one_of(
    deep_json, huge_json_number, non_finite_json, invalid_utf8, too_many_fields, wrong_content_type
)


@FUZZ
@given(shape=hostile, target=st.sampled_from(["post reset", "post books", "put", "patch", "delete"]))
def test_hostile_bodies_are_refused_with_a_json_4xx(api_client, broker, book, shape, target):
    body, content_type = shape
    method, url = {
        "post reset": ("POST", "/demo/reset-password-requests/"),
        "post books": ("POST", "/demo/books/"),
    }.get(target, (target.upper(), f"/demo/books/{book.pk}/"))

    with capture_dispatched() as dispatched:
        response = api_client.generic(method, url, body, content_type=content_type)

    check(response, dispatched)
    assert 400 <= response.status_code < 500, response.content[:200]
    assert "detail" in response.json()
