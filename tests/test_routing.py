"""Routing: which transport a message type goes to, cached and reset with the setting."""

from __future__ import annotations

from typing import Any

import pytest

from django_messenger import NoHandlerForMessage
from django_messenger.exceptions import UnknownTransport
from django_messenger.routing import transport_name_for
from django_messenger.transports import DramatiqTransport, Router, SyncTransport, router
from tests.testapp.messages import Ping, PlainGreeting, Shout
from tests.testapp.models import Article


class Unhandled:
    pass


@pytest.fixture
def routing(settings: Any) -> Any:
    """Set MESSENGER for the test: ``routing(DEFAULT_TRANSPORT=..., ROUTING=..., TRANSPORTS=...)``."""

    def configure(**messenger: Any) -> None:
        settings.MESSENGER = messenger

    return configure


# -- transport names ----------------------------------------------------------------


def test_an_exact_type_name_routes_to_its_transport(routing: Any) -> None:
    routing(ROUTING={"testapp.Ping": "sync"})

    assert transport_name_for("testapp.Ping") == "sync"
    assert transport_name_for("testapp.Shout") == "async"


def test_an_app_wildcard_routes_every_type_of_the_app(routing: Any) -> None:
    routing(ROUTING={"testapp.*": "sync"})

    assert transport_name_for("testapp.Ping") == "sync"
    assert transport_name_for("testapp.greeting") == "sync"
    assert transport_name_for("auth.User") == "async"


def test_the_star_routes_every_type(routing: Any) -> None:
    routing(ROUTING={"*": "sync"})

    assert transport_name_for("testapp.Ping") == "sync"
    assert transport_name_for("auth.User") == "sync"


def test_a_type_no_key_matches_goes_to_the_default_transport(routing: Any) -> None:
    routing(DEFAULT_TRANSPORT="sync", ROUTING={"auth.*": "async"})

    assert transport_name_for("testapp.Ping") == "sync"


def test_the_default_transport_is_async_when_not_set(routing: Any) -> None:
    routing()

    assert transport_name_for("testapp.Ping") == "async"


def test_the_most_specific_key_wins(routing: Any) -> None:
    # Given an exact key, an app key and the star, each to another transport
    routing(
        ROUTING={"testapp.Ping": "sync", "testapp.*": "bulk", "*": "async"},
        TRANSPORTS={"bulk": {"queue_name": "bulk"}},
        DEFAULT_TRANSPORT="other",
    )

    # Then exact beats app, app beats star, and star beats the default
    assert transport_name_for("testapp.Ping") == "sync"
    assert transport_name_for("testapp.Shout") == "bulk"
    assert transport_name_for("auth.User") == "async"


def test_an_app_wildcard_matches_the_first_dotted_part_only(routing: Any) -> None:
    routing(ROUTING={"test.*": "sync"})

    assert transport_name_for("testapp.Ping") == "async"
    assert transport_name_for("test.Thing") == "sync"


# -- transports ---------------------------------------------------------------------


def test_async_routes_to_a_dramatiq_transport_on_its_queue(routing: Any) -> None:
    routing(TRANSPORTS={"async": {"queue_name": "messenger"}})

    transport = Router().transport_for(Ping)

    assert isinstance(transport, DramatiqTransport)
    assert transport.name == "async"
    assert transport.queue_name == "messenger"
    assert transport.synchronous is False


def test_sync_routes_to_the_sync_transport(routing: Any) -> None:
    routing(DEFAULT_TRANSPORT="sync")

    transport = Router().transport_for(Ping)

    assert isinstance(transport, SyncTransport)
    assert transport.synchronous is True


def test_a_plain_class_and_a_model_route_by_their_type_names(routing: Any) -> None:
    routing(ROUTING={"testapp.greeting": "sync", "testapp.Article": "sync"})

    assert isinstance(Router().transport_for(PlainGreeting), SyncTransport)
    assert isinstance(Router().transport_for(Article), SyncTransport)
    assert isinstance(Router().transport_for(Shout), DramatiqTransport)


def test_a_transport_defined_in_transports_is_a_dramatiq_transport(routing: Any) -> None:
    routing(ROUTING={"testapp.Ping": "bulk"}, TRANSPORTS={"bulk": {"queue_name": "bulk_queue"}})

    transport = Router().transport_for(Ping)

    assert isinstance(transport, DramatiqTransport)
    assert (transport.name, transport.queue_name) == ("bulk", "bulk_queue")


def test_an_unknown_transport_raises_naming_it_and_the_known_ones(routing: Any) -> None:
    routing(ROUTING={"testapp.Ping": "nowhere"})

    with pytest.raises(UnknownTransport, match="'nowhere'") as raised:
        Router().transport_for(Ping)
    assert "'async'" in str(raised.value)


def test_an_unknown_default_transport_raises(routing: Any) -> None:
    routing(DEFAULT_TRANSPORT="nowhere")

    with pytest.raises(UnknownTransport, match="nowhere"):
        Router().transport_for(Ping)


def test_a_type_without_handler_has_no_route() -> None:
    with pytest.raises(NoHandlerForMessage):
        Router().transport_for(Unhandled)


# -- caching ------------------------------------------------------------------------


def test_transports_are_built_once_by_type_and_by_name(routing: Any) -> None:
    routing()
    fresh = Router()

    # Two types on one transport share it, and asking again gives the same object
    assert fresh.transport_for(Ping) is fresh.transport_for(Ping)
    assert fresh.transport_for(Ping) is fresh.transport_for(Shout)
    assert fresh.transport_named("async") is fresh.transport_for(Ping)


def test_the_cache_is_cleared_when_messenger_changes(settings: Any) -> None:
    # Given the shared router answered for Ping with the async transport
    settings.MESSENGER = {"DEFAULT_TRANSPORT": "async"}
    assert isinstance(router.transport_for(Ping), DramatiqTransport)

    # When the setting changes
    settings.MESSENGER = {"DEFAULT_TRANSPORT": "sync"}

    # Then the router answers from the new setting
    assert isinstance(router.transport_for(Ping), SyncTransport)


def test_a_queue_name_change_gives_a_new_transport(settings: Any) -> None:
    settings.MESSENGER = {"TRANSPORTS": {"async": {"queue_name": "one"}}}
    assert router.transport_for(Ping).queue_name == "one"  # type: ignore[attr-defined]

    settings.MESSENGER = {"TRANSPORTS": {"async": {"queue_name": "two"}}}

    assert router.transport_for(Ping).queue_name == "two"  # type: ignore[attr-defined]


def test_clear_forgets_every_cached_transport(routing: Any) -> None:
    routing()
    fresh = Router()
    before = fresh.transport_for(Ping)

    fresh.clear()

    assert fresh.transport_for(Ping) is not before
