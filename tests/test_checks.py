"""System checks: one test per id, and the test project passes them all.

This module is also a URLconf (``urlpatterns`` below): tests point ROOT_URLCONF at it.
"""

from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.core import checks
from django.core.management import call_command
from django.urls import include, path
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from rest_framework import serializers, viewsets

from django_messenger import handler
from django_messenger.checks import (
    check_broker,
    check_handlers,
    check_routing,
    check_views,
)
from django_messenger.exceptions import HandlerError, HandlerErrorCode
from django_messenger.mixins import MessengerMixin
from django_messenger.persisters import dispatched_type
from django_messenger.transports.dramatiq.binding import binding
from django_messenger.viewsets import MessengerViewSet
from tests.testapp.messages import Ping
from tests.testapp.serializers import PingSerializer
from tests.testapp.views import ArticleViewSet, PingViewSet, RenameArticleViewSet


class Unhandled:
    def __init__(self, text: str) -> None:
        self.text = text


class Order:
    pass


class UnhandledViewSet(MessengerViewSet):
    serializer_class = PingSerializer
    message_class = Unhandled


class GroupSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Group
        fields = ["name"]


class GroupViewSet(MessengerMixin, viewsets.ModelViewSet):  # type: ignore[type-arg]
    queryset = Group.objects.all()
    serializer_class = GroupSerializer


class PlainGroupViewSet(viewsets.ModelViewSet):  # type: ignore[type-arg]
    """Not a messenger view: never checked."""

    queryset = Group.objects.all()
    serializer_class = GroupSerializer


class TypelessViewSet(MessengerViewSet):
    serializer_class = PingSerializer  # a plain Serializer, and no message_class


# The URLconf of the E001 tests: one unhandled view at the top, one inside include().
urlpatterns = [
    path("unhandled/", UnhandledViewSet.as_view({"post": "create"})),
    path("nested/", include([path("groups/", GroupViewSet.as_view({"post": "create"}))])),
    path("plain/", PlainGroupViewSet.as_view({"post": "create"})),
    path("pings/", PingViewSet.as_view({"post": "create"})),
]


class TypelessUrls:
    """The URLconf of the E006 test."""

    urlpatterns = [path("typeless/", TypelessViewSet.as_view({"post": "create"}))]


class OptionalTextSerializer(serializers.Serializer):  # type: ignore[type-arg]
    text = serializers.CharField(required=False)  # Ping(text) has no default


class OptionalTextViewSet(MessengerViewSet):
    serializer_class = OptionalTextSerializer
    message_class = Ping


class ExtraFieldSerializer(serializers.Serializer):  # type: ignore[type-arg]
    text = serializers.CharField()
    colour = serializers.CharField(required=False, default="red")  # Ping takes no colour


class ExtraFieldViewSet(MessengerViewSet):
    serializer_class = ExtraFieldSerializer
    message_class = Ping


class Greeting:
    def __init__(self, name: str, *, punctuation: str = "!") -> None:
        self.name = name
        self.punctuation = punctuation


class GreetingSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(required=False, default="you")  # always in validated_data
    shout = serializers.CharField(required=False, source="punctuation")  # the parameter has a default
    upper = serializers.BooleanField(read_only=True)  # never in validated_data


class FittingViewSet(MessengerViewSet):
    serializer_class = GreetingSerializer
    message_class = Greeting


class SignatureUrls:
    """The URLconf of the E011 tests."""

    urlpatterns = [
        path("optional/", OptionalTextViewSet.as_view({"post": "create"})),
        path("extra/", ExtraFieldViewSet.as_view({"post": "create"})),
        path("fitting/", FittingViewSet.as_view({"post": "create"})),
        path("renamed/", RenameArticleViewSet.as_view({"put": "update"})),
        path("articles/", ArticleViewSet.as_view({"post": "create"})),
    ]


def ids(errors: list[checks.CheckMessage]) -> list[str]:
    return [error.id for error in errors]


def only_errors(messages: list[checks.CheckMessage]) -> list[checks.CheckMessage]:
    return [message for message in messages if message.is_serious()]


# -- the test project ---------------------------------------------------------------


def test_the_test_project_passes_every_check() -> None:
    # call_command("check") raises SystemCheckError on any error
    call_command("check", verbosity=0)

    assert checks.run_checks(tags=["messenger"]) == []


def test_messenger_checks_are_registered_under_the_messenger_tag() -> None:
    registered = checks.registry.registry.get_checks()

    for check in (check_handlers, check_broker, check_routing, check_views):
        assert check in registered
        assert "messenger" in check.tags  # type: ignore[attr-defined]


# -- E001 / E006: views ---------------------------------------------------------------


def test_e001_a_view_whose_message_type_has_no_handler(settings: Any) -> None:
    # Given a URLconf with messenger views whose types have no handler
    settings.ROOT_URLCONF = __name__

    # When the view checks run
    errors = check_views()

    # Then each such view is an E001 naming the view and the type; other views pass
    assert ids(errors) == ["django_messenger.E001", "django_messenger.E001"]
    unhandled, group = errors
    assert unhandled.obj is UnhandledViewSet
    assert "tests.test_checks.UnhandledViewSet" in unhandled.msg
    assert "tests.test_checks.Unhandled," in unhandled.msg
    assert group.obj is GroupViewSet
    assert "django.contrib.auth.models.Group" in group.msg
    assert unhandled.hint and "@handler" in unhandled.hint


def test_e001_is_reported_by_run_checks_with_the_urls_tag(settings: Any) -> None:
    settings.ROOT_URLCONF = __name__

    assert "django_messenger.E001" in ids(checks.run_checks(tags=[checks.Tags.urls]))


def test_e006_a_view_that_cannot_tell_what_it_dispatches(settings: Any) -> None:
    settings.ROOT_URLCONF = TypelessUrls

    errors = check_views()

    assert ids(errors) == ["django_messenger.E006"]
    assert errors[0].obj is TypelessViewSet
    assert "tests.test_checks.TypelessViewSet" in errors[0].msg


def test_a_view_routed_twice_is_reported_once(settings: Any) -> None:
    settings.ROOT_URLCONF = TypelessUrls
    TypelessUrls.urlpatterns = TypelessUrls.urlpatterns * 2
    try:
        assert ids(check_views()) == ["django_messenger.E006"]
    finally:
        TypelessUrls.urlpatterns = TypelessUrls.urlpatterns[:1]


def test_e011_serializer_fields_that_do_not_fit_the_message_signature(settings: Any) -> None:
    # Given views whose serializers leave out a needed parameter, or pass one the class does not
    # take, next to views whose serializers fit (defaults, sources, read-only fields, models)
    settings.ROOT_URLCONF = SignatureUrls

    # When the view checks run (the unhandled Greeting's E001 aside)
    errors = [error for error in check_views() if error.id != "django_messenger.E001"]

    # Then each misfit is one E011 naming the view, the field and the class
    assert ids(errors) == ["django_messenger.E011", "django_messenger.E011"]
    optional, extra = errors
    assert optional.obj is OptionalTextViewSet
    assert "tests.test_checks.OptionalTextViewSet" in optional.msg
    assert "'text' may be left out" in optional.msg and "Ping()" in optional.msg
    assert extra.obj is ExtraFieldViewSet
    assert "'colour' is not a parameter of Ping()" in extra.msg
    assert optional.hint and "default" in optional.hint


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (PingViewSet, Ping),
        (ArticleViewSet, ArticleViewSet.serializer_class.Meta.model),
        (RenameArticleViewSet, RenameArticleViewSet.message_class),
        (GroupViewSet, Group),
        (TypelessViewSet, None),
    ],
    ids=lambda value: getattr(value, "__name__", repr(value)),
)
def test_dispatched_type_of_each_kind_of_view(view: type, expected: type | None) -> None:
    serializer_class = view.input_serializer_class if view.messenger == "input" else view.serializer_class
    assert dispatched_type(view, serializer_class) is expected


# -- E002 / E003 / E007: handlers -------------------------------------------------------


def test_e002_a_handler_with_no_message_type(scratch: Any) -> None:
    @handler
    def on_anything(message):  # type: ignore[no-untyped-def]
        ...

    errors = check_handlers()

    assert ids(errors) == ["django_messenger.E002"]
    [error] = errors
    assert error.obj == "tests.test_checks.test_e002_a_handler_with_no_message_type.<locals>.on_anything"
    assert "has no message type" in error.msg
    assert "no type annotation" in error.msg


def test_e002_a_handler_with_an_unresolvable_annotation(scratch: Any) -> None:
    @handler
    def on_missing(message: "NoSuchMessage") -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    assert ids(check_handlers()) == ["django_messenger.E002"]


def test_e003_two_handlers_with_one_actor_name(scratch: Any) -> None:
    # Given two handlers that share an actor name
    @handler(actor_name="tests.duplicate")
    def first(message: Order) -> None: ...

    @handler(actor_name="tests.duplicate")
    def second(message: Unhandled) -> None: ...

    # When the handler checks run
    errors = check_handlers()

    # Then one E003 names both functions (and the second is not also reported alone)
    assert ids(errors) == ["django_messenger.E003"]
    [error] = errors
    assert error.obj == "tests.duplicate"
    assert ".first" in error.msg
    assert ".second" in error.msg


def test_e003_a_handler_whose_actor_name_another_actor_took(scratch: Any) -> None:
    dramatiq.actor(lambda: None, broker=binding.broker, actor_name="tests.plain_dramatiq_actor")

    @handler(actor_name="tests.plain_dramatiq_actor")
    def on_order(message: Order) -> None: ...

    errors = check_handlers()

    assert ids(errors) == ["django_messenger.E003"]
    assert "already taken" in errors[0].msg


@pytest.mark.parametrize("wording", ["le nom d'acteur est déjà pris", "name clash with another actor"])
def test_e003_is_keyed_on_the_error_code_whatever_its_wording(scratch: Any, wording: str) -> None:
    # Given a handler refused because another actor took its name, its error worded otherwise
    dramatiq.actor(lambda: None, broker=binding.broker, actor_name="tests.reworded_actor")

    @handler(actor_name="tests.reworded_actor")
    def on_order(message: Order) -> None: ...

    declared = scratch(on_order)
    assert declared.error is not None
    declared.error = HandlerError(declared.error.code, wording)

    # When the handler checks run
    errors = check_handlers()

    # Then it is still an E003, with the error's own words
    assert ids(errors) == ["django_messenger.E003"]
    assert wording in errors[0].msg


def test_an_actor_refused_for_another_reason_is_e007_even_if_its_text_says_already_taken(
    scratch: Any,
) -> None:
    # Given a handler whose actor Dramatiq refused, with an error text that mentions "already taken"
    @handler
    def on_order(message: Order) -> None: ...

    scratch(on_order).error = HandlerError(
        HandlerErrorCode.ACTOR_REFUSED, "the queue name 'q' is already taken by another broker"
    )

    # Then the check goes by the code: E007, not E003
    assert ids(check_handlers()) == ["django_messenger.E007"]


def test_e007_a_handler_with_an_actor_option_the_broker_does_not_know(scratch: Any) -> None:
    @handler(no_such_option=True)
    def on_order(message: Order) -> None: ...

    errors = check_handlers()

    assert ids(errors) == ["django_messenger.E007"]
    assert "no_such_option" in errors[0].msg


# -- E004 / W001 / W002 / E008: the broker ----------------------------------------------

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672"


@pytest.fixture
def rabbitmq(monkeypatch: pytest.MonkeyPatch) -> Callable[..., RabbitmqBroker]:
    """Make the registry's broker a RabbitmqBroker (it connects only when used; it is not used)."""

    def install(*, confirm_delivery: bool, url: str = RABBITMQ_URL) -> RabbitmqBroker:
        broker = RabbitmqBroker(url=url, confirm_delivery=confirm_delivery)
        monkeypatch.setattr(binding, "_broker", broker)
        return broker

    return install


def test_e004_a_rabbitmq_broker_without_confirms(rabbitmq: Any) -> None:
    rabbitmq(confirm_delivery=False)

    errors = only_errors(check_broker())

    assert ids(errors) == ["django_messenger.E004"]
    assert errors[0].obj == "DRAMATIQ_BROKER"
    assert "confirm_delivery" in errors[0].hint
    assert "CONFIRM_DELIVERY" in errors[0].hint


def test_no_e004_when_the_user_accepts_at_most_once(rabbitmq: Any, settings: Any) -> None:
    settings.MESSENGER = {"CONFIRM_DELIVERY": False}
    rabbitmq(confirm_delivery=False)

    assert only_errors(check_broker()) == []


def test_no_e004_for_a_rabbitmq_broker_with_confirms(rabbitmq: Any) -> None:
    rabbitmq(confirm_delivery=True)

    assert only_errors(check_broker()) == []


def test_no_e004_for_the_stub_broker() -> None:
    assert check_broker() == []


def test_w001_a_rabbitmq_broker_with_heartbeats_off(rabbitmq: Any) -> None:
    rabbitmq(confirm_delivery=True, url=f"{RABBITMQ_URL}?heartbeat=0&blocked_connection_timeout=10")

    warnings = check_broker()

    assert ids(warnings) == ["django_messenger.W001"]
    assert warnings[0].level == checks.WARNING
    assert "heartbeat" in warnings[0].hint


def test_w002_a_rabbitmq_broker_without_blocked_connection_timeout(rabbitmq: Any) -> None:
    rabbitmq(confirm_delivery=True, url=f"{RABBITMQ_URL}?heartbeat=30")

    warnings = check_broker()

    assert ids(warnings) == ["django_messenger.W002"]
    assert warnings[0].level == checks.WARNING
    assert "blocked_connection_timeout" in warnings[0].hint


def test_a_well_configured_rabbitmq_broker_passes(rabbitmq: Any) -> None:
    rabbitmq(confirm_delivery=True, url=f"{RABBITMQ_URL}?heartbeat=30&blocked_connection_timeout=10")

    assert check_broker() == []


def test_e008_django_dramatiq_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    is_installed = apps.is_installed
    monkeypatch.setattr(apps, "is_installed", lambda name: name != "django_dramatiq" and is_installed(name))

    errors = check_broker()

    assert ids(errors) == ["django_messenger.E008"]
    assert errors[0].obj == "INSTALLED_APPS"
    assert "django_dramatiq" in errors[0].msg


# -- E005: routing ----------------------------------------------------------------------


def test_e005_an_undefined_default_transport(settings: Any) -> None:
    settings.MESSENGER = {"DEFAULT_TRANSPORT": "nowhere"}

    errors = check_routing()

    assert ids(errors) == ["django_messenger.E005"]
    assert "'nowhere'" in errors[0].msg
    assert "DEFAULT_TRANSPORT" in errors[0].msg


def test_e005_a_route_to_an_undefined_transport(settings: Any) -> None:
    settings.MESSENGER = {"ROUTING": {"testapp.Ping": "async", "testapp.*": "nowhere", "*": "sync"}}

    errors = check_routing()

    assert ids(errors) == ["django_messenger.E005"]
    assert "testapp.*" in errors[0].msg


def test_no_e005_for_sync_async_and_defined_transports(settings: Any) -> None:
    settings.MESSENGER = {
        "DEFAULT_TRANSPORT": "bulk",
        "ROUTING": {"a.*": "sync", "b.*": "async"},
        "TRANSPORTS": {"bulk": {"queue_name": "bulk"}},
    }

    assert check_routing() == []


def test_w008_a_key_or_transport_option_messenger_does_not_read(settings: Any) -> None:
    from django_messenger.checks import check_unknown_settings

    # Given a misspelt key and a transport option this version does not know
    settings.MESSENGER = {
        **settings.MESSENGER,
        "PUBLISH_TIMOUT": 2,
        "TRANSPORTS": {"async": {"queue_name": "q", "queue_type": "quorum", "queue_kind": "quorum"}},
    }

    # Then each is a W008 naming it; the known keys (queue_name, queue_type) are not
    warnings = check_unknown_settings()
    assert ids(warnings) == ["django_messenger.W008", "django_messenger.W008"]
    assert "MESSENGER['PUBLISH_TIMOUT']" in warnings[0].msg
    assert "['queue_kind']" in warnings[1].msg


def test_w008_is_silent_for_the_known_settings(settings: Any) -> None:
    from django_messenger.checks import check_unknown_settings

    settings.MESSENGER = {"DEFAULT_TRANSPORT": "sync", "PUBLISH_TIMEOUT": 2, "TRANSPORTS": {"async": {}}}

    assert check_unknown_settings() == []
