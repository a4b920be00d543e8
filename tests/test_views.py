"""The views of CONTRACT section 5, through DRF's test client on the StubBroker."""

from __future__ import annotations

import base64
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework import serializers
from rest_framework.test import APIRequestFactory

from django_messenger.encoding import decode_envelope
from django_messenger.persisters import dispatched_type
from django_messenger.stamps import OperationStamp, RemoveStamp, UserStamp
from django_messenger.viewsets import MessengerViewSet
from tests.conftest import queued
from tests.testapp.messages import Ping, RenameArticle
from tests.testapp.models import Article, Effect
from tests.testapp.serializers import PingSerializer
from tests.testapp.views import ArticleViewSet, PingViewSet, RenameArticleViewSet

pytestmark = pytest.mark.django_db


def only_envelope(broker: Any) -> Any:
    messages = queued(broker)
    assert len(messages) == 1, messages
    return decode_envelope(messages[0].args[0])


@pytest.fixture
def article() -> Article:
    return Article.objects.create(title="Dune", body="spice", price=Decimal("9.99"))


def assert_empty_202(response: Any) -> None:
    assert response.status_code == 202
    assert response.content == b""
    assert response["Content-Length"] == "0"
    assert "Content-Type" not in response
    uuid.UUID(response["Messenger-Message-Id"])


class TestCreate:
    def test_valid_post_dispatches_the_message_and_answers_202(self, api_client, broker):
        response = api_client.post("/pings/", {"text": "hello"}, format="json")

        assert_empty_202(response)
        envelope = only_envelope(broker)
        assert envelope.message == Ping(text="hello")
        assert str(envelope.message_id) == response["Messenger-Message-Id"]
        assert envelope.last(OperationStamp) == OperationStamp("create", ("text",), {})

    def test_invalid_post_is_400_with_field_errors_and_sends_nothing(self, api_client, broker):
        response = api_client.post("/pings/", {"text": ""}, format="json")

        assert response.status_code == 400
        assert "text" in response.json()
        assert queued(broker) == []

    @pytest.mark.parametrize(
        "body", [b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe", b'{"text": {"a": 1}}']
    )
    def test_malformed_json_is_400_never_500(self, api_client, broker, body):
        response = api_client.post("/pings/", body, content_type="application/json")

        assert response.status_code == 400
        assert queued(broker) == []

    def test_model_create_dispatches_an_unsaved_instance(self, api_client, broker):
        response = api_client.post("/articles/", {"title": "Emma", "price": "3.10"}, format="json")

        assert_empty_202(response)
        envelope = only_envelope(broker)
        book = envelope.message
        assert isinstance(book, Article)
        assert book.pk is None and book._state.adding is True
        assert book.price == Decimal("3.10")
        assert Article.objects.count() == 0, "the view never saves"

    def test_save_extra_fields_are_dispatched_and_listed(self, api_client, broker):
        user = User.objects.create_user("ada")
        api_client.force_authenticate(user)

        api_client.post("/articles/", {"title": "Emma"}, format="json")

        envelope = only_envelope(broker)
        assert envelope.message.author_id == user.pk
        assert "author" in envelope.last(OperationStamp).fields

    def test_get_is_plain_drf(self, api_client, broker, article):
        response = api_client.get("/articles/")

        assert response.status_code == 200
        assert response.json()[0]["title"] == "Dune"
        assert queued(broker) == []

    def test_command_endpoint_has_no_read(self, api_client):
        assert api_client.get("/pings/").status_code == 405


class TestUpdate:
    def test_put_dispatches_the_changed_instance_unsaved(self, api_client, broker, article):
        response = api_client.put(
            f"/articles/{article.pk}/", {"title": "Dune II", "body": "more"}, format="json"
        )

        assert_empty_202(response)
        envelope = only_envelope(broker)
        assert envelope.message.pk == article.pk
        assert envelope.message.title == "Dune II"
        assert envelope.message._state.adding is False
        operation = envelope.last(OperationStamp)
        assert operation.operation == "update"
        assert operation.lookup == {"pk": str(article.pk)}
        article.refresh_from_db()
        assert article.title == "Dune", "the view never saves"

    def test_patch_lists_only_the_fields_the_request_set(self, api_client, broker, article):
        response = api_client.patch(f"/articles/{article.pk}/", {"body": "sand"}, format="json")

        assert_empty_202(response)
        operation = only_envelope(broker).last(OperationStamp)
        assert operation == OperationStamp("partial_update", ("body",), {"pk": str(article.pk)})

    def test_update_of_a_missing_object_is_404_and_sends_nothing(self, api_client, broker):
        assert api_client.patch("/articles/999999/", {"body": "x"}, format="json").status_code == 404
        assert queued(broker) == []

    def test_invalid_update_is_400(self, api_client, broker, article):
        response = api_client.patch(f"/articles/{article.pk}/", {"price": "not a number"}, format="json")

        assert response.status_code == 400
        assert "price" in response.json()
        assert queued(broker) == []


class TestDestroy:
    def test_delete_dispatches_the_instance_with_a_remove_stamp(self, api_client, broker, article):
        response = api_client.delete(f"/articles/{article.pk}/")

        assert_empty_202(response)
        envelope = only_envelope(broker)
        assert envelope.message.pk == article.pk
        assert envelope.last(RemoveStamp) is not None
        assert envelope.last(OperationStamp) == OperationStamp("destroy", (), {"pk": str(article.pk)})
        assert Article.objects.filter(pk=article.pk).exists(), "the view never deletes"


class TestInput:
    def test_input_dto_is_dispatched_with_the_lookup(self, api_client, broker, article):
        response = api_client.put(f"/renamed-articles/{article.pk}/", {"title": "Arrakis"}, format="json")

        assert_empty_202(response)
        envelope = only_envelope(broker)
        assert envelope.message == RenameArticle(title="Arrakis")
        assert envelope.last(OperationStamp).lookup == {"pk": str(article.pk)}

    def test_a_patch_missing_fields_the_dto_needs_is_400_not_500(self, api_client, broker, article):
        response = api_client.patch(f"/renamed-articles/{article.pk}/", {}, format="json")

        # Then the 400 names the missing field as DRF does, with no Python exception text
        assert response.status_code == 400
        assert response.json() == {"title": ["This field is required."]}
        assert queued(broker) == []

    def test_input_dto_delete_carries_the_remove_stamp(self, api_client, broker, article):
        response = api_client.delete(f"/renamed-articles/{article.pk}/", {"title": "gone"}, format="json")

        assert_empty_202(response)
        envelope = only_envelope(broker)
        assert envelope.message == RenameArticle(title="gone")
        assert envelope.last(RemoveStamp) is not None
        assert envelope.last(OperationStamp).lookup == {"pk": str(article.pk)}

    def test_input_dto_is_validated(self, api_client, broker, article):
        response = api_client.put(f"/renamed-articles/{article.pk}/", {}, format="json")

        assert response.status_code == 400
        assert "title" in response.json()
        assert queued(broker) == []


class OptionalTextSerializer(serializers.Serializer):  # type: ignore[type-arg]
    text = serializers.CharField(required=False)  # Ping(text) has no default: system check E011
    colour = serializers.CharField(required=False)  # Ping takes no colour: E011 too


class OptionalTextViewSet(MessengerViewSet):
    serializer_class = OptionalTextSerializer
    message_class = Ping


class Strict:
    """A message whose own __init__ raises TypeError: a server bug, not the client's."""

    def __init__(self, text: str) -> None:
        raise TypeError("a bug in the message class")


class StrictViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Strict


def post(view: type, data: dict[str, Any]) -> Any:
    request = APIRequestFactory().post("/", data, format="json")
    return view.as_view({"post": "create"})(request)


class TestMessageSignature:
    """Serializers that do not fit their message class (E011 at start-up): 400, never 500."""

    def test_an_optional_field_the_message_needs_is_400_naming_it(self, broker):
        response = post(OptionalTextViewSet, {})

        assert response.status_code == 400
        assert response.data == {"text": ["This field is required."]}
        assert queued(broker) == []

    def test_a_field_the_message_does_not_take_is_400_naming_it(self, broker):
        response = post(OptionalTextViewSet, {"text": "hi", "colour": "red"})

        assert response.status_code == 400
        assert list(response.data) == ["colour"]
        assert "argument" not in str(response.data["colour"]), "says what to do, not Python's text"
        assert queued(broker) == []

    def test_a_request_that_fits_is_dispatched(self, broker):
        assert post(OptionalTextViewSet, {"text": "hi"}).status_code == 202
        assert only_envelope(broker).message == Ping(text="hi")

    def test_a_type_error_inside_the_message_init_stays_a_server_error(self, broker):
        with pytest.raises(TypeError, match="a bug in the message class"):
            post(StrictViewSet, {"text": "hi"})
        assert queued(broker) == []


@pytest.mark.usefixtures("sync_transport")
class TestSynchronousOutput:
    def test_the_handler_result_is_serialized(self, api_client):
        response = api_client.post("/computations/", {"a": 2, "b": 3}, format="json")

        assert response.status_code == 200
        assert response.json() == {"a": 5, "b": 0}
        uuid.UUID(response["Messenger-Message-Id"])

    def test_an_http_response_from_the_handler_is_sent_unchanged(self, api_client):
        response = api_client.post("/computations/", {"a": -1, "b": 0}, format="json")

        assert response.status_code == 418
        assert response.content == b"negative"
        assert "Messenger-Message-Id" in response

    def test_no_result_leaves_the_body_empty(self, api_client):
        response = api_client.post("/computations/", {"a": 0, "b": 0}, format="json")

        assert response.status_code == 200
        assert response.content == b""

    def test_sync_model_writes_happen_in_the_request(self, api_client, article):
        assert api_client.patch(f"/articles/{article.pk}/", {"body": "new"}, format="json").status_code == 202
        article.refresh_from_db()
        assert article.body == "new"

        assert api_client.delete(f"/articles/{article.pk}/").status_code == 202
        assert not Article.objects.filter(pk=article.pk).exists()

        assert api_client.post("/articles/", {"title": "Created"}, format="json").status_code == 202
        assert Article.objects.filter(title="Created").exists()


class TestEdge:
    def test_unauthenticated_write_is_401_and_dispatches_nothing(self, api_client, broker):
        response = api_client.post("/private-pings/", {"text": "hi"}, format="json")

        assert response.status_code == 401
        assert queued(broker) == []

    def test_wrong_credentials_are_401_and_dispatch_nothing(self, api_client, broker):
        User.objects.create_user("ada", password="right")
        api_client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"ada:wrong").decode())

        response = api_client.post("/private-pings/", {"text": "hi"}, format="json")

        assert response.status_code == 401
        assert queued(broker) == []

    def test_forbidden_write_is_403_and_dispatches_nothing(self, api_client, broker):
        api_client.force_authenticate(User.objects.create_user("not-an-admin"))

        response = api_client.post("/admin-pings/", {"text": "hi"}, format="json")

        assert response.status_code == 403
        assert queued(broker) == []

    def test_the_permitted_user_gets_through(self, api_client, broker):
        api_client.force_authenticate(User.objects.create_user("admin", is_staff=True))

        assert api_client.post("/admin-pings/", {"text": "hi"}, format="json").status_code == 202

    def test_throttled_write_dispatches_nothing(self, api_client, broker, settings):
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        assert api_client.post("/throttled-pings/", {"text": "1"}, format="json").status_code == 202
        broker.flush_all()

        response = api_client.post("/throttled-pings/", {"text": "2"}, format="json")

        assert response.status_code == 429
        assert queued(broker) == []

    def test_a_body_over_the_upload_limit_is_refused_not_queued(self, api_client, broker, settings):
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

        response = api_client.post(
            "/pings/", '{"text": "%s"}' % ("x" * 5000), content_type="application/json"
        )

        # Then a JSON 413 that names no setting of ours, and nothing queued
        assert response.status_code == 413
        assert response.json()["detail"]
        assert "DATA_UPLOAD_MAX_MEMORY_SIZE" not in response.json()["detail"]
        assert queued(broker) == []

    @pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
    def test_a_5000_digit_number_in_a_field_is_a_400_that_names_no_python_internals(
        self, api_client, broker, content_type
    ):
        # A JSON *number* that large fails in the parser (hostile bodies, docs/reliability.md);
        # as a string, form field or JSON string, it reaches the serializer's fields.
        digits = "9" * 5000
        body = json.dumps({"a": digits, "b": 1}) if content_type == "application/json" else f"a={digits}&b=1"

        response = api_client.post("/computations/", body, content_type=content_type)

        assert response.status_code == 400
        assert list(response.json()) == ["a"]
        assert "sys." not in response.content.decode()
        assert queued(broker) == []

    def test_user_stamp_is_opt_in(self, api_client, broker, settings):
        user = User.objects.create_user("grace")
        api_client.force_authenticate(user)
        api_client.post("/pings/", {"text": "a"}, format="json")
        assert only_envelope(broker).last(UserStamp) is None
        broker.flush_all()

        settings.MESSENGER = {**settings.MESSENGER, "USER_STAMP": True}
        api_client.post("/pings/", {"text": "b"}, format="json")

        assert only_envelope(broker).last(UserStamp) == UserStamp(str(user.pk))


class TestBrokerFailure:
    @pytest.fixture
    def failing_broker(self, broker, monkeypatch):
        def refuse(message: Any, *, delay: Any = None) -> Any:
            raise ConnectionError("connection refused")

        monkeypatch.setattr(broker, "enqueue", refuse)
        return broker

    def test_a_refused_send_is_503_with_retry_after_and_the_message_id(
        self, api_client, failing_broker, caplog
    ):
        response = api_client.post("/pings/", {"text": "hello"}, format="json")

        # Then the client gets a 503 it can act on: wait, retry, and quote the attempt's id
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert "may or may not have been accepted" in detail
        assert int(response["Retry-After"]) > 0
        message_id = str(uuid.UUID(response["Messenger-Message-Id"]))
        # And what went wrong is in the log, with that id, never in the answer
        assert "connection refused" not in response.content.decode()
        assert "ConnectionError" not in response.content.decode()
        [record] = [r for r in caplog.records if r.name == "django_messenger" and r.levelname == "WARNING"]
        assert message_id in record.getMessage()
        assert "connection refused" in record.getMessage()

    @pytest.mark.django_db(transaction=True)
    def test_under_atomic_requests_it_is_still_503(self, api_client, failing_broker, atomic_requests):
        response = api_client.post("/articles/", {"title": "x"}, format="json")

        assert response.status_code == 503
        assert Article.objects.count() == 0


@pytest.fixture
def atomic_requests(settings):
    settings.DATABASES["default"]["ATOMIC_REQUESTS"] = True
    yield
    settings.DATABASES["default"]["ATOMIC_REQUESTS"] = False


class TestAtomicRequests:
    def test_messenger_views_are_exempt(self):
        from django.urls import resolve

        assert "default" in resolve("/articles/").func._non_atomic_requests

    @pytest.mark.django_db(transaction=True)
    @pytest.mark.usefixtures("sync_transport", "atomic_requests")
    def test_a_sync_handler_gets_a_transaction_of_its_own(self, api_client):
        response = api_client.post("/pings/", {"text": "committed"}, format="json")

        assert response.status_code == 202
        assert Effect.objects.filter(payload__text="committed").exists()


class TestOneRuleForTheDispatchedType:
    """The view and the system checks ask one function which type a view dispatches."""

    @pytest.mark.parametrize(
        ("method", "url", "body", "view"),
        [
            ("post", "/pings/", {"text": "hi"}, PingViewSet),
            ("post", "/articles/", {"title": "Emma", "price": "3.10"}, ArticleViewSet),
            ("put", "/articles/{pk}/", {"title": "Emma", "price": "3.10"}, ArticleViewSet),
            ("put", "/renamed-articles/{pk}/", {"title": "Arrakis"}, RenameArticleViewSet),
            ("delete", "/renamed-articles/{pk}/", {"title": "gone"}, RenameArticleViewSet),
        ],
    )
    def test_the_view_dispatches_what_dispatched_type_names(
        self, api_client: Any, broker: Any, article: Article, method: str, url: str, body: Any, view: type
    ) -> None:
        # Given the type that the checks (E001, E006, E011) take for the view
        serializer_class = view.input_serializer_class if view.messenger == "input" else view.serializer_class
        expected = dispatched_type(view, serializer_class)

        # When a valid write goes through the view
        response = getattr(api_client, method)(url.format(pk=article.pk), body, format="json")

        # Then the message it dispatched is of that type
        assert_empty_202(response)
        assert type(only_envelope(broker).message) is expected
