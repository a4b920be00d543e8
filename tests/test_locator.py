"""The handler registry: type names, @handler, actor options, lookups.

No ``from __future__ import annotations`` here: handlers declared inside tests
annotate their parameter with local classes, which must be real objects for
``typing.get_type_hints`` to see.
"""

import dataclasses
import importlib
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import module_loading

from django_messenger import Envelope, MessageDecodingFailed, NoHandlerForMessage, UnknownMessageType, handler
from django_messenger.exceptions import HandlerErrorCode
from django_messenger.locator import locator
from django_messenger.message_types import message_types, type_name
from django_messenger.transports.dramatiq.binding import DEFAULT_ACTOR_OPTIONS, binding
from tests.testapp import handlers as testapp_handlers
from tests.testapp.messages import Address, Everything, Ping, PlainGreeting, Shout
from tests.testapp.models import Article

# -- fixtures ---------------------------------------------------------------------


@dataclasses.dataclass
class Order:
    number: int


@dataclasses.dataclass
class Refund:
    number: int


class Outer:
    class Inner:
        pass


# -- type names -------------------------------------------------------------------


def test_messenger_name_overrides_the_type_name() -> None:
    assert type_name(PlainGreeting) == "testapp.greeting"


def test_messenger_name_is_not_inherited() -> None:
    # A subclass is another type: it must not take its parent's wire name
    class LoudGreeting(PlainGreeting):
        pass

    assert (
        type_name(LoudGreeting)
        == "tests.test_locator.test_messenger_name_is_not_inherited.<locals>.LoudGreeting"
    )


def test_an_empty_messenger_name_is_ignored() -> None:
    class Nameless:
        messenger_name = ""

    assert (
        type_name(Nameless) == "tests.test_locator.test_an_empty_messenger_name_is_ignored.<locals>.Nameless"
    )


def test_a_model_is_named_by_its_label() -> None:
    assert type_name(Article) == "testapp.Article"
    assert type_name(User) == "auth.User"


def test_a_class_in_an_installed_app_is_app_label_dot_class_name() -> None:
    assert type_name(Ping) == "testapp.Ping"
    assert type_name(Address) == "testapp.Address"


def test_a_class_outside_installed_apps_is_named_by_its_module_path() -> None:
    # tests/ is not an installed app (tests.testapp is)
    assert type_name(Order) == "tests.test_locator.Order"
    assert type_name(Outer.Inner) == "tests.test_locator.Outer.Inner"


def test_the_test_apps_types_are_registered_under_their_names() -> None:
    assert message_types.name_of(Ping) == "testapp.Ping"
    assert message_types.name_of(PlainGreeting) == "testapp.greeting"
    assert message_types.resolve("testapp.Article") is Article


def test_types_named_by_a_registered_dataclass_fields_are_registered_too() -> None:
    # Everything has `address: Address | None` and `addresses: list[Address]`; Address has no handler
    assert not locator.has_handlers(Address)
    assert message_types.resolve("testapp.Address") is Address
    assert message_types.name_of(Address) == "testapp.Address"


def test_two_types_with_one_name_cannot_both_register(scratch: Any) -> None:
    class First:
        messenger_name = "tests.clash"

    class Second:
        messenger_name = "tests.clash"

    message_types.register(First)

    with pytest.raises(ValueError, match="messenger_name"):
        message_types.register(Second)
    assert message_types.resolve("tests.clash") is First


# -- @handler forms -----------------------------------------------------------------


def test_bare_handler_takes_the_type_from_the_annotation_and_returns_the_function(scratch: Any) -> None:
    # Given a function annotated with its message type
    def on_order(message: Order) -> str:
        return f"order {message.number}"

    # When it is declared a handler
    decorated = handler(on_order)

    # Then the function itself comes back, still callable
    assert decorated is on_order
    assert decorated(Order(1)) == "order 1"
    # and it handles Order, as an actor of the broker
    declared = scratch(on_order)
    assert declared.message_type is Order
    assert declared.error is None
    assert declared.wants_envelope is False
    assert locator.handlers_for(Order) == (declared,)
    assert binding.broker.actors[declared.actor_name] is binding.actor_of(declared)
    assert binding.actor_of(declared).messenger_handler is declared


def test_handler_with_empty_parentheses_reads_the_annotation(scratch: Any) -> None:
    @handler()
    def on_order(message: Order) -> None: ...

    assert scratch(on_order).message_type is Order


def test_handler_with_an_explicit_type_needs_no_annotation(scratch: Any) -> None:
    @handler(Order)
    def on_order(message, envelope):  # type: ignore[no-untyped-def]
        return envelope

    declared = scratch(on_order)
    assert declared.message_type is Order
    assert declared.wants_envelope is True
    assert declared.error is None


def test_an_explicit_type_wins_over_the_annotation(scratch: Any) -> None:
    @handler(Refund)
    def on_refund(message: Order) -> None: ...

    assert scratch(on_refund).message_type is Refund


def test_an_envelope_parameter_asks_for_the_envelope(scratch: Any) -> None:
    @handler
    def on_order(message: Order, envelope: Envelope) -> None: ...

    assert scratch(on_order).wants_envelope is True


def test_the_default_actor_name_is_module_and_qualname(scratch: Any) -> None:
    @handler
    def on_order(message: Order) -> None: ...

    assert scratch(on_order).actor_name == (
        "tests.test_locator.test_the_default_actor_name_is_module_and_qualname.<locals>.on_order"
    )


def test_two_functions_named_handle_in_different_modules_do_not_clash(scratch: Any) -> None:
    # Given the test app's handlers.handle (for Ping), and another app's handlers.handle
    def handle(message: Order) -> None: ...

    handle.__module__ = "another_app.handlers"
    handle.__qualname__ = "handle"

    # When the second one is declared
    handler(handle)

    # Then each has an actor of its own
    declared = scratch(handle)
    assert declared.actor_name == "another_app.handlers.handle"
    assert declared.error is None
    [ping_handler] = locator.handlers_for(Ping)
    assert ping_handler.actor_name == "tests.testapp.handlers.handle"
    assert ping_handler.fn is testapp_handlers.handle
    assert ping_handler.error is None


# -- handlers that cannot be used ---------------------------------------------------


def test_a_handler_without_an_annotation_gets_an_error_and_no_actor(scratch: Any) -> None:
    @handler
    def on_anything(message):  # type: ignore[no-untyped-def]
        ...

    declared = scratch(on_anything)
    assert declared.message_type is None
    assert "no type annotation" in str(declared.error)
    assert declared.error is not None and declared.error.code is HandlerErrorCode.NO_MESSAGE_TYPE
    assert binding.actor_of(declared) is None
    assert declared.actor_name not in binding.broker.actors


def test_an_unresolvable_string_annotation_is_an_error(scratch: Any) -> None:
    @handler
    def on_missing(message: "NoSuchMessage") -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    declared = scratch(on_missing)
    assert declared.message_type is None
    assert "cannot be resolved" in str(declared.error)
    assert "NoSuchMessage" in str(declared.error)
    assert binding.actor_of(declared) is None


def test_a_handler_without_parameters_is_an_error(scratch: Any) -> None:
    @handler
    def on_nothing() -> None: ...

    assert "takes no parameter" in str(scratch(on_nothing).error)


def test_an_annotation_that_is_not_a_class_is_an_error(scratch: Any) -> None:
    @handler
    def on_maybe(message: Order | None) -> None: ...

    declared = scratch(on_maybe)
    assert declared.message_type is None
    assert "not a class" in str(declared.error)


def test_an_explicit_type_that_is_not_a_class_is_an_error(scratch: Any) -> None:
    @handler("tests.test_locator.Order")  # type: ignore[call-overload]
    def on_order(message: Order) -> None: ...

    declared = scratch(on_order)
    assert declared.message_type is None
    assert "is not a class" in str(declared.error)
    assert not locator.has_handlers(str)


def test_an_actor_option_the_broker_does_not_know_is_an_error(scratch: Any) -> None:
    @handler(no_such_option=1)
    def on_order(message: Order) -> None: ...

    declared = scratch(on_order)
    assert "no_such_option" in str(declared.error)
    assert declared.error is not None and declared.error.code is HandlerErrorCode.ACTOR_REFUSED
    assert binding.actor_of(declared) is None


def test_an_invalid_queue_name_is_an_error(scratch: Any) -> None:
    @handler(queue_name="not a queue!")
    def on_order(message: Order) -> None: ...

    declared = scratch(on_order)
    assert "Queue names" in str(declared.error)
    assert binding.actor_of(declared) is None


def test_a_second_handler_with_the_same_actor_name_gets_an_error(scratch: Any) -> None:
    # Given a handler with an explicit actor name
    @handler(actor_name="tests.same_name")
    def first(message: Order) -> None: ...

    # When another handler takes the same name
    @handler(actor_name="tests.same_name")
    def second(message: Refund) -> None: ...

    # Then the first keeps the actor and the second is refused
    assert scratch(first).error is None
    assert binding.broker.actors["tests.same_name"].messenger_handler is scratch(first)
    assert "already taken" in str(scratch(second).error)
    assert scratch(second).error.code is HandlerErrorCode.ACTOR_NAME_TAKEN
    assert binding.actor_of(scratch(second)) is None
    assert locator.handler_named("tests.same_name") is scratch(first)


def test_an_actor_name_taken_by_a_plain_dramatiq_actor_is_an_error(scratch: Any) -> None:
    import dramatiq

    dramatiq.actor(lambda: None, broker=binding.broker, actor_name="tests.plain_actor")

    @handler(actor_name="tests.plain_actor")
    def on_order(message: Order) -> None: ...

    assert "already taken" in str(scratch(on_order).error)


def test_a_handler_whose_actor_could_not_be_declared_is_not_dispatched_to(scratch: Any) -> None:
    # Given a handler refused for its duplicate actor name
    @handler(actor_name="tests.taken")
    def first(message: Order) -> None: ...

    @handler(actor_name="tests.taken")
    def second(message: Refund) -> None: ...

    # Then its type has no handler to dispatch to (the system checks report it)
    assert scratch(second).error is not None
    assert not locator.has_handlers(Refund)
    with pytest.raises(NoHandlerForMessage):
        locator.handlers_for(Refund)


def test_a_refused_handler_leaves_the_other_handlers_of_its_type(scratch: Any) -> None:
    # Given a good handler of Order and one refused for an unknown actor option
    @handler
    def good(message: Order) -> None: ...

    @handler(no_such_option=1)
    def refused(message: Order) -> None: ...

    # Then only the good one is dispatched to
    assert scratch(refused).error is not None
    assert locator.handlers_for(Order) == (scratch(good),)


# -- actor options ------------------------------------------------------------------


def test_actor_options_pass_through_to_dramatiq(scratch: Any) -> None:
    @handler(queue_name="mail", max_retries=5, priority=10, time_limit=60_000)
    def on_order(message: Order) -> None: ...

    actor = binding.actor_of(scratch(on_order))
    assert actor.queue_name == "mail"
    assert actor.priority == 10
    assert actor.options["max_retries"] == 5
    assert actor.options["time_limit"] == 60_000
    assert "mail" in binding.broker.queues


def test_messenger_retry_defaults_replace_dramatiqs(scratch: Any) -> None:
    @handler
    def on_order(message: Order) -> None: ...

    actor = binding.actor_of(scratch(on_order))
    assert DEFAULT_ACTOR_OPTIONS == {"max_retries": 3, "min_backoff": 1_000, "max_backoff": 300_000}
    assert actor.options["max_retries"] == 3
    assert actor.options["min_backoff"] == 1_000
    assert actor.options["max_backoff"] == 300_000
    assert actor.priority == 0


def test_user_retry_options_win_over_the_defaults(scratch: Any) -> None:
    @handler(max_retries=0, max_backoff=10)
    def on_order(message: Order) -> None: ...

    actor = binding.actor_of(scratch(on_order))
    assert actor.options["max_retries"] == 0
    assert actor.options["max_backoff"] == 10
    assert actor.options["min_backoff"] == 1_000


def test_throws_always_includes_decoding_failures(scratch: Any) -> None:
    @handler
    def on_order(message: Order) -> None: ...

    assert binding.actor_of(scratch(on_order)).options["throws"] == (MessageDecodingFailed,)


@pytest.mark.parametrize(
    ("throws", "expected"),
    [
        ((KeyError, LookupError), (MessageDecodingFailed, KeyError, LookupError)),
        ([KeyError], (MessageDecodingFailed, KeyError)),
        (KeyError, (MessageDecodingFailed, KeyError)),
        ((), (MessageDecodingFailed,)),
    ],
    ids=["tuple", "list", "one class", "empty"],
)
def test_throws_keeps_the_users_errors(scratch: Any, throws: Any, expected: tuple[type, ...]) -> None:
    @handler(throws=throws)
    def on_order(message: Order) -> None: ...

    assert binding.actor_of(scratch(on_order)).options["throws"] == expected


def test_a_handler_without_queue_name_uses_its_transports_queue(scratch: Any, settings: Any) -> None:
    # Given the async transport's queue is "messenger"
    settings.MESSENGER = {"TRANSPORTS": {"async": {"queue_name": "messenger"}}}

    @handler
    def on_order(message: Order) -> None: ...

    assert binding.actor_of(scratch(on_order)).queue_name == "messenger"


def test_a_handler_routed_to_another_transport_uses_that_queue(scratch: Any, settings: Any) -> None:
    settings.MESSENGER = {
        "ROUTING": {"tests.test_locator.Order": "bulk"},
        "TRANSPORTS": {"bulk": {"queue_name": "bulk_queue"}},
    }

    @handler
    def on_order(message: Order) -> None: ...

    assert binding.actor_of(scratch(on_order)).queue_name == "bulk_queue"


def test_a_handler_routed_to_sync_still_gets_the_async_queue(scratch: Any, settings: Any) -> None:
    settings.MESSENGER = {"DEFAULT_TRANSPORT": "sync", "TRANSPORTS": {"async": {"queue_name": "fallback"}}}

    @handler
    def on_order(message: Order) -> None: ...

    assert binding.actor_of(scratch(on_order)).queue_name == "fallback"


def test_the_test_apps_handler_options_reached_its_actor() -> None:
    [everything_handler] = locator.handlers_for(Everything)

    assert binding.actor_of(everything_handler).queue_name == "other"


# -- lookups ----------------------------------------------------------------------


def test_fan_out_handlers_are_returned_in_registration_order() -> None:
    names = [h.fn.__name__ for h in locator.handlers_for(Shout)]

    assert names == ["shout_one", "shout_two"]


def test_handlers_for_an_unknown_type_raises_naming_it() -> None:
    with pytest.raises(NoHandlerForMessage, match=r"tests\.test_locator\.Refund"):
        locator.handlers_for(Refund)
    assert locator.has_handlers(Refund) is False


def test_name_of_an_unregistered_type_raises() -> None:
    with pytest.raises(NoHandlerForMessage, match="not a registered message type"):
        message_types.name_of(Refund)


def test_unregister_forgets_the_handler(scratch: Any) -> None:
    @handler
    def on_order(message: Order) -> None: ...

    declared = scratch(on_order)
    locator.unregister(declared)

    assert declared not in locator.handlers
    assert not locator.has_handlers(Order)
    assert locator.handler_named(declared.actor_name) is None


def test_unregister_keeps_the_other_handlers_of_the_type(scratch: Any) -> None:
    @handler
    def first(message: Order) -> None: ...

    @handler
    def second(message: Order) -> None: ...

    locator.unregister(scratch(first))

    assert locator.handlers_for(Order) == (scratch(second),)


def test_handler_named_finds_a_handler_by_actor_name() -> None:
    found = locator.handler_named("tests.testapp.handlers.handle")

    assert found is not None
    assert found.fn is testapp_handlers.handle
    assert locator.handler_named("no.such.actor") is None


def test_message_types_lists_the_handled_types() -> None:
    types = set(locator.message_types())

    assert {Ping, Everything, Shout, PlainGreeting, Article} <= types
    assert Address not in types


def test_resolve_never_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given that any import by name fails the test
    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"resolve imported {name!r}")

    monkeypatch.setattr(module_loading, "import_string", refuse)
    monkeypatch.setattr(importlib, "import_module", refuse)

    # Then registered names resolve, and importable-but-unregistered ones do not
    assert message_types.resolve("testapp.Ping") is Ping
    for name in ["tests.testapp.messages.Ping", "os.system", "builtins.eval", "json.loads", ""]:
        with pytest.raises(UnknownMessageType, match="Unknown message type"):
            message_types.resolve(name)


@pytest.mark.parametrize("name", [None, 1, ["testapp.Ping"], {"a": 1}])
def test_resolve_of_a_non_string_raises_unknown_type(name: Any) -> None:
    with pytest.raises(UnknownMessageType):
        message_types.resolve(name)


def test_handler_repr_names_the_actor() -> None:
    [ping_handler] = locator.handlers_for(Ping)

    assert repr(ping_handler) == "<Handler tests.testapp.handlers.handle>"
    assert ping_handler.name == ping_handler.actor_name
