"""Hostile request bodies on every messenger endpoint, for every parser DRF ships.

Each answer is a 4xx with a JSON body, and nothing is dispatched; never a 5xx, never
Django's HTML 400 page. Bodies that parse but do not validate get DRF's field errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from rest_framework import parsers, serializers
from rest_framework.test import APIRequestFactory

from django_messenger import handler
from django_messenger.encoding import decode_envelope
from django_messenger.parsing import MAX_DEPTH
from django_messenger.viewsets import MessengerViewSet
from tests.conftest import queued
from tests.testapp.messages import Ping
from tests.testapp.models import Article
from tests.testapp.serializers import PingSerializer

pytestmark = pytest.mark.django_db

BOUNDARY = b"hostile-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY.decode()}"
FORM = "application/x-www-form-urlencoded"
DEPTH = 100_000
DIGITS = "1" * 100_000


def multipart(fields: list[tuple[str, bytes]], files: int = 0) -> bytes:
    """A multipart/form-data body of raw ``fields`` and ``files`` small text files."""
    parts = [
        [f'Content-Disposition: form-data; name="{name}"'.encode(), b"", value] for name, value in fields
    ]
    parts += [
        [
            f'Content-Disposition: form-data; name="file{i}"; filename="f{i}.txt"'.encode(),
            b"Content-Type: text/plain",
            b"",
            b"x",
        ]
        for i in range(files)
    ]
    lines = [line for part in parts for line in (b"--" + BOUNDARY, *part)]
    return b"\r\n".join([*lines, b"--" + BOUNDARY + b"--", b""])


def many_fields(count: int) -> list[tuple[str, bytes]]:
    return [(f"f{i}", b"1") for i in range(count)]


# (id, body, content type, expected status): bodies no messenger endpoint can read
UNREADABLE = [
    ("json-deep-arrays", b"[" * DEPTH + b"]" * DEPTH, "application/json", 400),
    ("json-past-max-depth", b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "application/json", 400),
    ("json-deep-objects", b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, "application/json", 400),
    (
        "json-huge-int",
        b'{"text": %s, "title": %s}' % (DIGITS.encode(), DIGITS.encode()),
        "application/json",
        400,
    ),
    ("json-huge-float", b'{"text": 1e999, "title": "x", "price": 1e999}', "application/json", 400),
    ("json-nan", b'{"text": NaN, "title": NaN}', "application/json", 400),
    ("json-infinity", b'{"text": Infinity, "title": -Infinity}', "application/json", 400),
    ("json-invalid-utf8", b'{"text": "\xff\xfe", "title": "\xc3("}', "application/json", 400),
    ("json-syntax", b'{"text": "x",', "application/json", 400),
    ("form-invalid-utf8-raw", b"text=\xff&title=\xc3(", FORM, 400),
    ("form-invalid-utf8-escaped", b"text=%FF&title=%C3%28", FORM, 400),
    ("form-too-many-fields", "&".join(f"f{i}=1" for i in range(1001)).encode(), FORM, 400),
    ("multipart-invalid-utf8", multipart([("text", b"\xff\xfe"), ("title", b"\xc3(")]), MULTIPART, 400),
    ("multipart-too-many-fields", multipart(many_fields(1001)), MULTIPART, 400),
    ("multipart-too-many-files", multipart([("text", b"x")], files=101), MULTIPART, 400),
    ("multipart-no-boundary", multipart([("text", b"x")]), "multipart/form-data", 400),
    ("text-plain", b'{"text": "x", "title": "x"}', "text/plain", 415),
    ("xml", b"<text>x</text>", "application/xml", 415),
    ("no-content-type", b'{"text": "x", "title": "x"}', "", 415),
    ("binary-charset", b'{"text": "x", "title": "x"}', "application/json; charset=bz2_codec", 400),
]

ENDPOINTS = [
    ("POST", "/pings/"),
    ("POST", "/computations/"),
    ("POST", "/articles/"),
    ("PUT", "/articles/{pk}/"),
    ("PATCH", "/articles/{pk}/"),
    ("DELETE", "/articles/{pk}/"),
    ("PUT", "/renamed-articles/{pk}/"),
    ("PATCH", "/renamed-articles/{pk}/"),
    ("DELETE", "/renamed-articles/{pk}/"),
]


@pytest.fixture
def article() -> Article:
    return Article.objects.create(title="Dune", body="spice", price=Decimal("9.99"))


def assert_refused(response: Any, broker: Any, status: int | None = None) -> Any:
    assert response.status_code < 500, response.content[:300]
    assert 400 <= response.status_code < 500, response.content[:300]
    if status is not None:
        assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    assert queued(broker) == [], "a refused write dispatches nothing"
    return response.json()


@pytest.mark.parametrize(("method", "url"), ENDPOINTS, ids=[f"{m} {u}" for m, u in ENDPOINTS])
@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [shape[1:] for shape in UNREADABLE],
    ids=[shape[0] for shape in UNREADABLE],
)
def test_an_unreadable_body_is_a_json_4xx_with_detail(
    api_client, broker, article, method, url, body, content_type, status
):
    # Given a messenger endpoint and a body it cannot read
    # When it is sent
    response = api_client.generic(method, url.format(pk=article.pk), body, content_type=content_type)

    # Then the answer is a 4xx whose JSON detail says what to change, and nothing is dispatched
    detail = assert_refused(response, broker, status)["detail"]
    assert "Error" not in detail and "sys." not in detail, "no Python exception text"


@pytest.mark.parametrize(("method", "url"), ENDPOINTS, ids=[f"{m} {u}" for m, u in ENDPOINTS])
def test_a_query_string_with_too_many_fields_is_a_json_400(api_client, broker, article, method, url):
    query = "&".join(f"q{i}=1" for i in range(1001))

    response = api_client.generic(
        method,
        f"{url.format(pk=article.pk)}?{query}",
        b'{"text": "x", "title": "x"}',
        content_type="application/json",
    )

    assert "too many fields" in assert_refused(response, broker, 400)["detail"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"text": "%s"}' % (b"x" * 5000), "application/json"),
        (b"text=" + b"x" * 5000, FORM),
        (multipart([("text", b"x" * 5000)]), MULTIPART),
    ],
    ids=["json", "form", "multipart"],
)
def test_a_body_over_the_upload_limit_is_a_json_413_for_every_parser(
    api_client, broker, settings, body, content_type
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = api_client.post("/pings/", body, content_type=content_type)

    assert "detail" in assert_refused(response, broker, 413)


# (id, field values) that a form carries as text: the serializer refuses them for number fields
NUMBER_SHAPES = {
    "nan": "NaN",
    "infinity": "-Infinity",
    "huge-int": DIGITS,
    "deep": "[" * DEPTH + "]" * DEPTH,
}
NUMBER_ENDPOINTS = [
    ("POST", "/articles/", "price"),
    ("PUT", "/articles/{pk}/", "price"),
    ("PATCH", "/articles/{pk}/", "price"),
    ("POST", "/computations/", "a"),
]


@pytest.mark.parametrize(
    ("method", "url", "field"), NUMBER_ENDPOINTS, ids=[f"{m} {u}" for m, u, _ in NUMBER_ENDPOINTS]
)
@pytest.mark.parametrize("value", list(NUMBER_SHAPES.values()), ids=list(NUMBER_SHAPES))
@pytest.mark.parametrize("kind", ["form", "multipart"])
def test_hostile_numbers_in_forms_are_field_errors(
    api_client, broker, article, method, url, field, value, kind
):
    fields = {"title": "Dune", "b": "1", field: value}
    if kind == "form":
        body, content_type = "&".join(f"{k}={v}" for k, v in fields.items()).encode(), FORM
    else:
        body, content_type = multipart([(k, v.encode()) for k, v in fields.items()]), MULTIPART

    response = api_client.generic(method, url.format(pk=article.pk), body, content_type=content_type)

    assert field in assert_refused(response, broker, 400)


def test_forms_that_are_valid_text_are_accepted(api_client, broker):
    # U+00E9 in UTF-8, raw and percent-encoded, in a form and in a multipart body
    for body, content_type in [
        ("text=caf\u00e9".encode(), FORM),
        (b"text=caf%C3%A9", FORM),
        (multipart([("text", "caf\u00e9".encode())]), MULTIPART),
    ]:
        assert api_client.post("/pings/", body, content_type=content_type).status_code == 202
    assert len(queued(broker)) == 3


class LenientJSONParser(parsers.JSONParser):
    strict = False  # reads NaN and Infinity


class OwnParsersViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Ping
    parser_classes = [LenientJSONParser, parsers.FormParser]


def test_a_view_with_its_own_parser_classes_is_guarded_too(broker):
    view = OwnParsersViewSet.as_view({"post": "create"})
    factory = APIRequestFactory()

    deep = view(factory.post("/", b"[" * DEPTH + b"]" * DEPTH, content_type="application/json"))
    nan = view(factory.post("/", b'{"text": NaN}', content_type="application/json"))
    fine = view(factory.post("/", b'{"text": "hi"}', content_type="application/json"))

    assert deep.status_code == 400 and "detail" in deep.data
    assert nan.status_code == 400 and "detail" in nan.data
    assert fine.status_code == 202
    assert len(queued(broker)) == 1


class AnyJSONSerializer(serializers.Serializer):  # type: ignore[type-arg]
    text = serializers.JSONField()


@dataclass
class AnyJSON:
    text: Any


class AnyJSONViewSet(MessengerViewSet):
    serializer_class = AnyJSONSerializer
    message_class = AnyJSON


@pytest.mark.parametrize("depth", [1, MAX_DEPTH - 4, MAX_DEPTH - 1, MAX_DEPTH, 900])
def test_json_nesting_is_never_a_202_for_what_a_worker_refuses(broker: Any, scratch: Any, depth: int) -> None:
    # Given a JSONField, which takes any document Python can parse (900 levels and more), whose
    # message field takes any value
    @handler
    def take(message: AnyJSON) -> None: ...

    view = AnyJSONViewSet.as_view({"post": "create"})
    body = b'{"text": ' + b"[" * depth + b"]" * depth + b"}"

    # When a document of `depth` nested lists inside the outer object is posted
    response = view(APIRequestFactory().post("/", body, content_type="application/json"))

    # Then it is dispatched only when a worker can decode it, and refused with a JSON 400 otherwise
    if response.status_code == 202:
        [message] = queued(broker)
        decode_envelope(message.args[0])
    else:
        assert response.status_code == 400, response.data
        assert response.data["detail"]
        assert queued(broker) == []
    if depth == 1 or depth > MAX_DEPTH:
        assert response.status_code == (202 if depth == 1 else 400)


def test_a_method_the_endpoint_does_not_take_stays_a_405(api_client, broker):
    response = api_client.put("/pings/", b"[" * DEPTH + b"]" * DEPTH, content_type="application/json")

    assert assert_refused(response, broker, 405)["detail"]


def test_a_delete_without_a_body_still_dispatches(api_client, broker, article):
    assert api_client.delete(f"/articles/{article.pk}/").status_code == 202
    assert len(queued(broker)) == 1
