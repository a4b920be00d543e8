"""The OpenAPI schema drf-spectacular generates for messenger views (django_messenger/openapi.py).

The extension is loaded by ``apps.ready()`` because tests/settings.py installs drf_spectacular:
nothing here registers it by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from django.urls import include, path
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.validation import validate_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from django_messenger.mixins import MessengerMixin
from django_messenger.openapi import MessengerAutoSchema
from django_messenger.viewsets import MessengerViewSet
from tests.testapp import views as testapp_views
from tests.testapp.messages import Ping
from tests.testapp.models import Article
from tests.testapp.serializers import ArticleSerializer, PingSerializer

ROOT = Path(__file__).resolve().parents[1]
WRITES = ("post", "put", "patch", "delete")


def schema_of(urlconf: Any) -> dict[str, Any]:
    """The schema drf-spectacular generates for ``urlconf`` (a module path or a list of patterns)."""
    if isinstance(urlconf, str):
        generator = SchemaGenerator(urlconf=urlconf)
    else:
        generator = SchemaGenerator(patterns=urlconf)
    return generator.get_schema(request=None, public=True)  # type: ignore[no-any-return]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or the component its ``$ref`` points at."""
    ref = node.get("$ref")
    if ref is None:
        return node
    _, _, section, name = ref.split("/")
    return schema["components"][section][name]  # type: ignore[no-any-return]


def body_schema(schema: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    return resolve(schema, content["application/json"]["schema"])


def assert_messenger_write(schema: dict[str, Any], operation: dict[str, Any], *, lookup: bool) -> None:
    """What every messenger write documents: 202 with no body and its id, 400, 413, 415, 503."""
    responses = operation["responses"]
    accepted = responses["202"]
    assert "content" not in accepted, "a 202 has no body"
    message_id = accepted["headers"]["Messenger-Message-Id"]
    assert message_id["required"] is True
    assert message_id["schema"] == {"type": "string", "format": "uuid"}

    invalid = body_schema(schema, responses["400"]["content"])
    assert invalid["type"] == "object"
    assert invalid["properties"]["non_field_errors"] == {"type": "array", "items": {"type": "string"}}
    assert "detail" in invalid["properties"]
    assert invalid["additionalProperties"]  # each field name maps to its errors

    assert body_schema(schema, responses["413"]["content"])["required"] == ["detail"]
    assert body_schema(schema, responses["415"]["content"])["required"] == ["detail"]

    unavailable = responses["503"]
    assert body_schema(schema, unavailable["content"])["required"] == ["detail"]
    assert unavailable["headers"]["Retry-After"] == {
        "schema": {"type": "integer"},
        "description": "Seconds to wait before sending the request again.",
        "required": True,
    }
    assert unavailable["headers"]["Messenger-Message-Id"]["schema"]["format"] == "uuid"
    assert unavailable["headers"]["Messenger-Message-Id"].get("required") is not True

    assert ("404" in responses) is lookup
    assert not {"200", "201", "204"} & set(responses), "no answer the view never gives"


# -- the demo ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_schema() -> dict[str, Any]:
    return schema_of("testproject.urls")


def test_the_demo_command_endpoint_is_documented_as_it_answers(demo_schema):
    operation = demo_schema["paths"]["/reset-password-requests/"]["post"]
    assert_messenger_write(demo_schema, operation, lookup=False)
    request = body_schema(demo_schema, operation["requestBody"]["content"])
    assert request["properties"]["username"]["maxLength"] == 150
    assert operation["requestBody"]["required"] is True


def test_every_write_of_the_demo_book_resource_is_a_messenger_write(demo_schema):
    books, book = demo_schema["paths"]["/books/"], demo_schema["paths"]["/books/{id}/"]
    assert_messenger_write(demo_schema, books["post"], lookup=False)
    for method in ("put", "patch", "delete"):
        assert_messenger_write(demo_schema, book[method], lookup=True)
    assert "requestBody" not in book["delete"], "the demo's DELETE takes no body"


def test_the_demo_reads_stay_drf_spectacular_s_own(demo_schema):
    listing = demo_schema["paths"]["/books/"]["get"]["responses"]
    assert set(listing) == {"200"}
    assert listing["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert "headers" not in listing["200"]
    assert set(demo_schema["paths"]["/books/{id}/"]["get"]["responses"]) >= {"200"}


def test_spectacular_validate_on_the_demo_prints_no_warning(tmp_path):
    # Given the demo project with drf-spectacular installed
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "DEMO_SQLITE_PATH": str(tmp_path / "demo.sqlite3"),
        "PYTHONPATH": str(ROOT),
    }
    # When its schema is generated and validated, as a user would
    output = tmp_path / "schema.yml"
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(output)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then it succeeds and says nothing
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    assert "Messenger-Message-Id" in output.read_text()


# -- input and output views (the test app) -------------------------------------------------------


@pytest.fixture(scope="module")
def testapp_schema() -> dict[str, Any]:
    return schema_of("tests.testapp.urls")


def test_the_test_app_schema_is_valid_openapi(testapp_schema):
    # Its input view documents a DELETE with a body, its output view a 200 with one
    validate_schema(testapp_schema)


def test_input_views_document_the_input_serializer_as_every_write_s_body(testapp_schema):
    paths = testapp_schema["paths"]
    operations = [
        paths["/renamed-articles/"]["post"],
        paths["/renamed-articles/{id}/"]["put"],
        paths["/renamed-articles/{id}/"]["patch"],
        paths["/renamed-articles/{id}/"]["delete"],  # the DTO is dispatched from a DELETE's body too
    ]
    for operation in operations:
        request = body_schema(testapp_schema, operation["requestBody"]["content"])
        assert set(request["properties"]) == {"title"}, operation["operationId"]
    assert operations[0]["requestBody"]["required"] is True
    assert operations[3]["requestBody"]["required"] is True
    assert "required" not in body_schema(testapp_schema, operations[2]["requestBody"]["content"])  # PATCH
    # The read still shows the resource
    read = paths["/renamed-articles/{id}/"]["get"]["responses"]["200"]
    assert {"title", "body", "price", "published", "author"} <= set(
        body_schema(testapp_schema, read["content"])["properties"]
    )


def test_an_output_view_handled_in_the_request_documents_the_serializer_s_result(settings):
    settings.MESSENGER = {**settings.MESSENGER, "ROUTING": {"testapp.Compute": "sync"}}
    schema = schema_of("tests.testapp.urls")
    responses = schema["paths"]["/computations/"]["post"]["responses"]
    assert "202" not in responses
    output = responses["200"]  # messenger_status = 200
    assert set(body_schema(schema, output["content"])["properties"]) == {"a", "b"}
    assert output["headers"]["Messenger-Message-Id"]["required"] is True
    assert {"400", "413", "415", "503"} <= set(responses)


def test_an_output_view_whose_message_goes_to_a_worker_documents_no_body(settings):
    settings.MESSENGER = {**settings.MESSENGER, "ROUTING": {"testapp.Compute": "async"}}
    schema = schema_of("tests.testapp.urls")
    output = schema["paths"]["/computations/"]["post"]["responses"]["200"]
    assert "content" not in output  # the view answers before any handler ran: nothing to return
    assert output["headers"]["Messenger-Message-Id"]["required"] is True


def test_views_that_are_not_messenger_views_are_left_alone(testapp_schema):
    responses = testapp_schema["paths"]["/delayed-pings/"]["post"]["responses"]
    assert "503" not in responses
    assert "Messenger-Message-Id" not in str(responses)


# -- what users annotate themselves --------------------------------------------------------------


class NoteSerializer(serializers.Serializer):  # type: ignore[type-arg]
    note = serializers.CharField()


class Receipt(serializers.Serializer):  # type: ignore[type-arg]
    number = serializers.IntegerField()


@extend_schema_view(create=extend_schema(summary="Send a ping", tags=["pings"]))
class SummarisedPingViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Ping


class OverriddenPingViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Ping

    @extend_schema(responses={202: OpenApiResponse(response=Receipt, description="Ours.")})
    def create(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return super().create(request, *args, **kwargs)


class TaggingSchema(AutoSchema):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def get_tags(self) -> list[str]:
        return [self.tag]


class OwnSchemaArticleViewSet(MessengerMixin, viewsets.ModelViewSet):  # type: ignore[type-arg]
    queryset = Article.objects.order_by("id")
    serializer_class = ArticleSerializer
    schema = TaggingSchema("tagged-by-the-user")

    @action(detail=True, methods=["post"], serializer_class=NoteSerializer)
    def annotate(self, request: Any, pk: str | None = None) -> Response:
        return Response({"note": "kept"})


router = SimpleRouter()
router.register("summarised", SummarisedPingViewSet, basename="summarised")
router.register("overridden", OverriddenPingViewSet, basename="overridden")
router.register("own-schema", OwnSchemaArticleViewSet, basename="own-schema")
user_patterns = [path("", include(router.urls))]


@pytest.fixture(scope="module")
def user_schema() -> dict[str, Any]:
    return schema_of(user_patterns)


def test_extend_schema_on_an_action_keeps_messenger_s_answers(user_schema):
    operation = user_schema["paths"]["/summarised/"]["post"]
    assert operation["summary"] == "Send a ping"
    assert operation["tags"] == ["pings"]
    assert_messenger_write(user_schema, operation, lookup=False)


def test_responses_the_user_declares_win_and_keep_the_message_id_header(user_schema):
    responses = user_schema["paths"]["/overridden/"]["post"]["responses"]
    assert set(responses) == {"202"}
    assert responses["202"]["description"] == "Ours."
    assert set(body_schema(user_schema, responses["202"]["content"])["properties"]) == {"number"}
    assert responses["202"]["headers"]["Messenger-Message-Id"]["required"] is True


def test_a_view_s_own_schema_class_still_applies(user_schema):
    collection = user_schema["paths"]["/own-schema/"]
    assert collection["post"]["tags"] == ["tagged-by-the-user"]
    assert_messenger_write(user_schema, collection["post"], lookup=False)
    assert_messenger_write(user_schema, user_schema["paths"]["/own-schema/{id}/"]["delete"], lookup=True)


def test_an_extra_action_of_a_messenger_viewset_is_not_documented_as_a_dispatch(user_schema):
    operation = user_schema["paths"]["/own-schema/{id}/annotate/"]["post"]
    assert set(operation["responses"]) == {"200"}
    assert "headers" not in operation["responses"]["200"]


def test_generating_the_schema_leaves_the_views_as_they_were(user_schema):
    # The extension works on subclasses made for the generator: the views serve requests unchanged
    assert type(OwnSchemaArticleViewSet.schema) is TaggingSchema
    assert not issubclass(SummarisedPingViewSet.create.kwargs["schema"], MessengerAutoSchema)
    assert not isinstance(testapp_views.PingViewSet.schema, MessengerAutoSchema)


# -- loading -------------------------------------------------------------------------------------

WITHOUT_SPECTACULAR = """
import sys
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework",
                    "django_dramatiq", "django_messenger"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    DRAMATIQ_BROKER={"BROKER": "dramatiq.brokers.stub.StubBroker", "OPTIONS": {}, "MIDDLEWARE": []},
)
django.setup()
print(sorted(name for name in sys.modules if name.startswith("drf_spectacular")),
      "django_messenger.openapi" in sys.modules)
"""


def test_without_drf_spectacular_in_installed_apps_nothing_of_it_is_imported():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_SPECTACULAR],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] False"


# -- the documented answers are the answers ------------------------------------------------------


def assert_documented(schema: dict[str, Any], path_: str, method: str, response: Any) -> None:
    """``response`` is one of the answers ``schema`` documents for ``method path_``: its status,
    its required headers (and their format) and its body's JSON schema."""
    documented = schema["paths"][path_][method]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{status} is not documented for {method.upper()} {path_}"
    answer = documented[status]
    for name, header in answer.get("headers", {}).items():
        if header.get("required"):
            assert response.has_header(name), f"{status} lacks its required header {name}"
        if response.has_header(name) and header["schema"].get("format") == "uuid":
            uuid.UUID(response[name])
        if response.has_header(name) and header["schema"]["type"] == "integer":
            int(response[name])
    if "content" not in answer:
        assert response.content == b"", "an answer documented without a body has one"
        return
    assert response["Content-Type"].split(";")[0] in answer["content"]
    body_schema_ = answer["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**body_schema_, "components": schema["components"]})


@pytest.mark.django_db
class TestTheDemoAnswersAsDocumented:
    """Each answer of the demo's book resource, from the test client, against the demo's schema."""

    @pytest.fixture
    def book(self) -> Any:
        from testproject.library.models import Book

        return Book.objects.create(title="Emma", author="Austen")

    def test_accepted_writes(self, demo_schema, api_client, broker, book):
        answers = [
            (
                "/books/",
                "post",
                api_client.post("/demo/books/", {"title": "Dune", "author": "H"}, format="json"),
            ),
            (
                "/books/{id}/",
                "put",
                api_client.put(f"/demo/books/{book.pk}/", {"title": "A", "author": "B"}, format="json"),
            ),
            (
                "/books/{id}/",
                "patch",
                api_client.patch(f"/demo/books/{book.pk}/", {"title": "C"}, format="json"),
            ),
            ("/books/{id}/", "delete", api_client.delete(f"/demo/books/{book.pk}/")),
        ]
        for path_, method, response in answers:
            assert response.status_code == 202
            assert_documented(demo_schema, path_, method, response)

    def test_invalid_unreadable_and_missing(self, demo_schema, api_client, broker, book):
        invalid = api_client.post("/demo/books/", {"title": ""}, format="json")
        unreadable = api_client.post("/demo/books/", "{not json", content_type="application/json")
        missing = api_client.patch("/demo/books/999999/", {"title": "C"}, format="json")
        unsupported = api_client.post("/demo/books/", "title=Dune", content_type="text/plain")
        assert (invalid.status_code, unreadable.status_code, missing.status_code) == (400, 400, 404)
        assert unsupported.status_code == 415
        assert_documented(demo_schema, "/books/", "post", unsupported)
        assert_documented(demo_schema, "/books/", "post", invalid)
        assert_documented(demo_schema, "/books/", "post", unreadable)
        assert_documented(demo_schema, "/books/{id}/", "patch", missing)

    def test_too_large(self, demo_schema, api_client, broker, settings):
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
        response = api_client.post("/demo/books/", {"title": "x" * 150, "author": "y"}, format="json")
        assert response.status_code == 413
        assert_documented(demo_schema, "/books/", "post", response)

    def test_broker_unavailable(self, demo_schema, api_client, broker, monkeypatch):
        def refuse(message: Any, *, delay: Any = None) -> Any:
            raise ConnectionError("connection refused")

        monkeypatch.setattr(broker, "enqueue", refuse)
        response = api_client.post("/demo/books/", {"title": "Dune", "author": "H"}, format="json")
        assert response.status_code == 503
        assert response.has_header("Messenger-Message-Id")
        assert_documented(demo_schema, "/books/", "post", response)


def test_a_tracked_idempotent_write_documents_location_the_key_409_and_422() -> None:
    # Given the demo's books: tracked, with an optional Idempotency-Key
    schema = schema_of("testproject.urls")
    operation = schema["paths"]["/books/"]["post"]

    # Then the 202 names its Location and the replay marker; the key is an optional request header
    accepted = operation["responses"]["202"]["headers"]
    assert accepted["Location"]["required"] is True
    assert "Idempotent-Replayed" in accepted
    [key] = [p for p in operation["parameters"] if p["in"] == "header" and p["name"] == "Idempotency-Key"]
    assert not key.get("required", False)
    assert operation["responses"]["409"]["headers"]["Retry-After"]["required"] is True
    assert "422" in operation["responses"]
    # And an untracked write without keys documents none of it
    reset = schema["paths"]["/reset-password-requests/"]["post"]
    assert "Location" not in reset["responses"]["202"]["headers"]
    assert not {"409", "422"} & set(reset["responses"])


def test_the_status_resource_documents_its_body() -> None:
    schema = schema_of("testproject.urls")

    [path_] = [p for p in schema["paths"] if p.startswith("/messages/")]
    body = body_schema(schema, schema["paths"][path_]["get"]["responses"]["200"]["content"])
    assert set(body["properties"]) == {"id", "status", "created_at", "updated_at", "error"}
    assert resolve(schema, body["properties"]["status"])["enum"] == ["pending", "handled", "failed"]
    assert "404" in schema["paths"][path_]["get"]["responses"]
