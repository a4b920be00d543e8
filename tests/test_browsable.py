"""The browsable API and OPTIONS of messenger views (browsable.py, metadata.py), through DRF's
test client: a browser's write gets DRF's page with its 202, an API client the empty body; the
forms, OPTIONS and a DELETE's body follow the serializer each write validates."""

from __future__ import annotations

import html
import json
import re
import uuid
from decimal import Decimal
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework import renderers
from rest_framework.decorators import action
from rest_framework.metadata import SimpleMetadata
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory

from django_messenger.browsable import MessengerBrowsableAPIRenderer, for_messenger
from django_messenger.encoding import decode_envelope
from django_messenger.metadata import MessengerMetadata
from django_messenger.metadata import for_messenger as metadata_for_messenger
from django_messenger.stamps import OperationStamp, RemoveStamp
from tests.conftest import queued
from tests.testapp.messages import Ping, RenameArticle
from tests.testapp.models import Article, Effect
from tests.testapp.views import PingViewSet, RenameArticleViewSet

pytestmark = pytest.mark.django_db

HTML = "text/html"
#: What Chromium sends when it navigates (an HTML form's POST).
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
#: What DRF's raw-data form script sends (rest_framework/js/ajax-form.js).
AJAX_FORM_ACCEPT = "text/html; q=1.0, */*"


@pytest.fixture
def article() -> Article:
    return Article.objects.create(title="Dune", body="spice", price=Decimal("9.99"))


def only_envelope(broker: Any) -> Any:
    messages = queued(broker)
    assert len(messages) == 1, messages
    return decode_envelope(messages[0].args[0])


def text(response: Any) -> str:
    return html.unescape(response.content.decode())


def assert_page_of_202(response: Any) -> str:
    """DRF's page, showing the 202 and the message id the header carries; returns its text."""
    assert response.status_code == 202
    assert response["Content-Type"].startswith("text/html")
    message_id = str(uuid.UUID(response["Messenger-Message-Id"]))
    page = text(response)
    assert "HTTP 202 Accepted" in page
    assert f'Messenger-Message-Id:</b> <span class="lit">{message_id}' in page
    assert "Content-Type:</b>" not in page, "API clients get no Content-Type: the page does not show one"
    return page


def assert_empty_202(response: Any) -> None:
    assert response.status_code == 202
    assert response.content == b""
    assert "Content-Type" not in response
    uuid.UUID(response["Messenger-Message-Id"])


def fields_of(form_html: str) -> set[str]:
    names = set(re.findall(r'name="([a-z_]+)"', form_html))
    return names - {"csrfmiddlewaretoken", "_content_type", "_content"}


def section(page: str, element_id: str) -> str:
    """The HTML from the element ``element_id`` to the end of its form."""
    start = page.index(f'id="{element_id}"')
    return page[start : page.index("</form>", start)]


def raw_content(page: str, element_id: str) -> dict[str, Any]:
    """The JSON the raw-data form ``element_id`` starts with."""
    area = re.search(r"<textarea[^>]*>(.*?)</textarea>", section(page, element_id), re.S)
    assert area is not None
    return json.loads(html.unescape(area.group(1)))


class TestTheAnswerOfAWrite:
    @pytest.mark.parametrize("accept", [HTML, BROWSER_ACCEPT, AJAX_FORM_ACCEPT])
    def test_a_browser_s_post_gets_drf_s_page_with_the_202_and_its_id(self, api_client, broker, accept):
        response = api_client.post("/pings/", {"text": "hello"}, HTTP_ACCEPT=accept)

        assert_page_of_202(response)
        envelope = only_envelope(broker)
        assert envelope.message == Ping(text="hello")
        assert str(envelope.message_id) == response["Messenger-Message-Id"]

    @pytest.mark.parametrize("accept", [None, "application/json", "*/*"])
    def test_api_clients_still_get_the_empty_202(self, api_client, broker, accept):
        extra = {"HTTP_ACCEPT": accept} if accept else {}
        response = api_client.post("/pings/", {"text": "hello"}, format="json", **extra)

        assert_empty_202(response)
        assert only_envelope(broker).message == Ping(text="hello")

    def test_the_format_override_asks_for_the_page_and_json_for_the_empty_body(self, api_client, broker):
        page = api_client.post("/pings/?format=api", {"text": "a"}, format="json")
        empty = api_client.post("/pings/?format=json", {"text": "b"}, format="json", HTTP_ACCEPT="*/*")

        assert_page_of_202(page)
        assert_empty_202(empty)

    def test_a_browsable_renderer_listed_first_gives_no_page_to_a_client_that_did_not_ask(self, broker):
        class BrowsableFirst(PingViewSet):
            renderer_classes = [renderers.BrowsableAPIRenderer, renderers.JSONRenderer]

        view = BrowsableFirst.as_view({"post": "create"})
        factory = APIRequestFactory()

        silent = view(factory.post("/pings/", {"text": "a"}, format="json"))
        starred = view(factory.post("/pings/", {"text": "b"}, format="json", HTTP_ACCEPT="*/*"))
        asked = view(factory.post("/pings/", {"text": "c"}, format="json", HTTP_ACCEPT=HTML))

        for response in (silent, starred):
            assert_empty_202(response)  # Django's HttpResponse: nothing to render
        asked.render()
        assert_page_of_202(asked)
        assert len(queued(broker)) == 3

    def test_put_patch_and_delete_of_a_resource_render_the_page(self, api_client, broker, article):
        url = f"/articles/{article.pk}/"
        put = api_client.put(url, {"title": "Dune II", "body": "more"}, HTTP_ACCEPT=HTML)
        patch = api_client.patch(url, {"title": "Dune III"}, HTTP_ACCEPT=HTML)
        delete = api_client.delete(url, HTTP_ACCEPT=HTML)

        for response in (put, patch, delete):
            assert_page_of_202(response)
        operations = [decode_envelope(message.args[0]) for message in queued(broker)]
        done = [envelope.last(OperationStamp).operation for envelope in operations]
        assert done == ["update", "partial_update", "destroy"]
        assert operations[2].last(RemoveStamp) is not None
        assert Article.objects.get(pk=article.pk).title == "Dune", "nothing was saved by the view"
        # The page of a write is a fresh form's, not a read of data the handler has not changed yet
        assert "Dune II" not in text(put).split("HTTP 202 Accepted", 1)[1].split("</pre>", 1)[0]

    def test_a_tracked_write_s_page_links_to_its_status_resource(self, api_client, broker):
        response = api_client.post("/tracked-pings/", {"text": "hi"}, HTTP_ACCEPT=HTML)

        page = assert_page_of_202(response)
        location = response["Location"]
        assert f'<a href="{location}"' in page, "the Location header is a link"
        status = api_client.get(location)
        assert status.status_code == 200
        assert status.json()["id"] == response["Messenger-Message-Id"]
        assert status.json()["status"] == "pending"

    def test_a_handled_tracked_write_s_link_reads_handled(self, api_client, sync_transport):
        response = api_client.post("/tracked-pings/", {"text": "hi"}, HTTP_ACCEPT=HTML)

        assert_page_of_202(response)
        assert api_client.get(response["Location"]).json()["status"] == "handled"
        assert Effect.objects.filter(handler="ping", message_id=response["Messenger-Message-Id"]).exists()

    def test_an_invalid_write_shows_drf_s_errors_in_its_form(self, api_client, broker):
        response = api_client.post("/renamed-articles/", {"title": ""}, HTTP_ACCEPT=HTML)

        assert response.status_code == 400
        assert "This field may not be blank." in text(response)
        assert queued(broker) == []

    def test_a_replayed_idempotent_write_answers_api_clients_with_the_empty_body(self, api_client, broker):
        key = {"HTTP_IDEMPOTENCY_KEY": f"browsable-{uuid.uuid4()}"}
        first = api_client.post("/tracked-pings/", {"text": "hi"}, format="json", HTTP_ACCEPT=HTML, **key)
        replay = api_client.post("/tracked-pings/", {"text": "hi"}, format="json", **key)

        assert_page_of_202(first)
        assert_empty_202(replay)
        assert replay["Idempotent-Replayed"] == "true"
        assert replay["Messenger-Message-Id"] == first["Messenger-Message-Id"]
        assert replay["Location"] == first["Location"]
        assert len(queued(broker)) == 1

    def test_a_synchronous_output_still_renders_its_body(self, api_client, sync_transport):
        response = api_client.post("/computations/", {"a": 2, "b": 3}, HTTP_ACCEPT=HTML)

        assert response.status_code == 200
        assert "HTTP 200 OK" in text(response)
        assert '"a": 5' in text(response)


class TestFormsOfAnInputView:
    def test_the_post_forms_are_the_input_serializer_s(self, api_client):
        page = text(api_client.get("/renamed-articles/", HTTP_ACCEPT=HTML))

        assert fields_of(section(page, "post-object-form")) == {"title"}
        assert raw_content(page, "post-generic-content-form") == {"title": ""}

    def test_the_put_and_patch_forms_are_the_input_serializer_s(self, api_client, article):
        page = text(api_client.get(f"/renamed-articles/{article.pk}/", HTTP_ACCEPT=HTML))

        assert fields_of(section(page, "put-object-form")) == {"title"}
        assert raw_content(page, "put-generic-content-form") == {"title": ""}

    def test_a_delete_that_needs_a_body_has_a_form_and_no_bodiless_button(self, api_client, article):
        page = text(api_client.get(f"/renamed-articles/{article.pk}/", HTTP_ACCEPT=HTML))

        assert "DELETE takes a body" in page
        assert fields_of(section(page, "delete-object-form")) == {"title"}
        assert 'data-method="DELETE"' in section(page, "delete-object-form")
        assert raw_content(page, "delete-generic-content-form") == {"title": ""}
        assert 'id="deleteModal"' not in page, "DRF's DELETE button sends no body"

    def test_a_resource_view_keeps_drf_s_forms_and_delete_button(self, api_client, article):
        page = text(api_client.get(f"/articles/{article.pk}/", HTTP_ACCEPT=HTML))

        assert {"title", "body", "price", "published"} <= fields_of(section(page, "put-object-form"))
        assert 'id="deleteModal"' in page
        assert 'id="messenger-delete"' not in page

    def test_the_delete_form_s_body_is_dispatched(self, api_client, broker, article):
        response = api_client.delete(
            f"/renamed-articles/{article.pk}/", {"title": "gone"}, format="multipart", HTTP_ACCEPT=HTML
        )

        assert_page_of_202(response)
        envelope = only_envelope(broker)
        assert envelope.message == RenameArticle(title="gone")
        assert envelope.last(RemoveStamp) is not None

    def test_a_delete_without_its_body_is_400_and_its_form_shows_why(self, api_client, broker, article):
        response = api_client.delete(f"/renamed-articles/{article.pk}/", HTTP_ACCEPT=HTML)

        assert response.status_code == 400
        page = text(response)
        assert "This field is required." in section(page, "delete-object-form")
        assert queued(broker) == []

    def test_a_post_through_the_input_form_dispatches_the_dto(self, api_client, broker):
        response = api_client.post("/renamed-articles/", {"title": "New"}, HTTP_ACCEPT=BROWSER_ACCEPT)

        assert_page_of_202(response)
        assert only_envelope(broker).message == RenameArticle(title="New")


class TestOptions:
    def test_an_input_view_describes_the_input_serializer_for_every_write(self, api_client, article):
        listing = api_client.options("/renamed-articles/").json()["actions"]
        detail = api_client.options(f"/renamed-articles/{article.pk}/").json()["actions"]

        assert set(listing) == {"POST"}
        assert set(listing["POST"]) == {"title"}
        assert set(detail) == {"PUT", "DELETE"}, "a DELETE that validates a body says so"
        assert set(detail["PUT"]) == {"title"}
        assert detail["DELETE"]["title"]["required"] is True

    def test_a_resource_view_describes_its_serializer_and_no_delete_body(self, api_client, article):
        listing = api_client.options("/articles/").json()["actions"]
        detail = api_client.options(f"/articles/{article.pk}/").json()["actions"]

        assert {"title", "body", "price"} <= set(listing["POST"])
        assert set(detail) == {"PUT"}

    def test_no_write_of_an_unknown_object_is_described(self, api_client):
        detail = api_client.options("/renamed-articles/999999/").json()

        assert "actions" not in detail, "DRF leaves PUT out (404), messenger the DELETE too"

    def test_a_viewset_s_own_action_keeps_its_own_serializer(self):
        class WithAction(RenameArticleViewSet):
            @action(detail=False, methods=["post"])
            def publish(self, request: Any) -> Response:
                return Response(status=204)

        view = WithAction.as_view({"post": "publish"})
        actions = view(APIRequestFactory().options("/renamed-articles/publish/")).data["actions"]

        assert {"title", "body", "price"} <= set(actions["POST"]), "the action's serializer, not the input's"

    def test_the_options_page_of_the_browsable_api_shows_the_input_fields(self, api_client):
        response = api_client.options("/renamed-articles/", HTTP_ACCEPT=HTML)

        assert response.status_code == 200
        assert '"title"' in text(response)
        assert '"body"' not in text(response)


def test_form_options_and_schema_agree_on_the_body_of_an_input_delete(api_client, article):
    # Given the input view's DELETE, as the browsable page, OPTIONS and the OpenAPI schema tell it
    page = text(api_client.get(f"/renamed-articles/{article.pk}/", HTTP_ACCEPT=HTML))
    options = api_client.options(f"/renamed-articles/{article.pk}/").json()["actions"]["DELETE"]
    schema = SchemaGenerator(urlconf="tests.testapp.urls").get_schema(request=None, public=True)
    body = schema["paths"]["/renamed-articles/{id}/"]["delete"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]

    # Then all three name the same required fields
    required = {name for name, field in options.items() if field["required"]}
    assert fields_of(section(page, "delete-object-form")) == required == {"title"}
    assert body["required"] is True
    assert set(schema["components"]["schemas"][ref]["required"]) == required


class TestProjectClasses:
    def test_a_project_s_browsable_renderer_gets_messenger_s_below_its_own(self):
        class Branded(renderers.BrowsableAPIRenderer):
            template = "rest_framework/api.html"

        mixed = for_messenger(Branded())

        assert isinstance(mixed, Branded) and isinstance(mixed, MessengerBrowsableAPIRenderer)
        assert mixed.template == "rest_framework/api.html", "the project's own template wins"
        assert type(for_messenger(Branded())) is type(mixed), "one mixed class per renderer class"

    def test_other_renderers_and_the_admin_renderer_are_left_alone(self):
        for renderer in (renderers.JSONRenderer(), renderers.AdminRenderer()):
            assert for_messenger(renderer) is renderer

    def test_a_project_s_metadata_class_gets_messenger_s_below_its_own(self):
        class Custom(SimpleMetadata):
            pass

        mixed = metadata_for_messenger(Custom)

        assert issubclass(mixed, Custom) and issubclass(mixed, MessengerMetadata)
        assert metadata_for_messenger(SimpleMetadata) is MessengerMetadata
        assert metadata_for_messenger(Custom) is mixed
