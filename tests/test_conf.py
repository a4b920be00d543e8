"""The MESSENGER setting: defaults, merging, reloading."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_messenger import conf
from django_messenger.conf import DEFAULTS, SYNC_TRANSPORT, MessengerSettings, messenger_settings, on_reload


def test_every_key_has_a_default_when_messenger_is_not_set(settings: Any) -> None:
    # Given no MESSENGER setting at all
    del settings.MESSENGER

    # Then every property answers its default
    assert messenger_settings.DEFAULT_TRANSPORT == "async"
    assert messenger_settings.ROUTING == {}
    assert messenger_settings.TRANSPORTS == {"async": {"queue_name": "default"}}
    assert messenger_settings.PUBLISH_TIMEOUT == 5.0
    assert messenger_settings.CONFIRM_DELIVERY is True
    assert messenger_settings.RETRY_AFTER == 5
    assert messenger_settings.MAX_MESSAGE_SIZE == 1024 * 1024
    assert messenger_settings.USER_STAMP is False


@pytest.mark.parametrize("value", [None, {}])
def test_an_empty_messenger_setting_means_the_defaults(settings: Any, value: Any) -> None:
    settings.MESSENGER = value

    assert DEFAULTS["DEFAULT_TRANSPORT"] == messenger_settings.DEFAULT_TRANSPORT
    assert DEFAULTS["TRANSPORTS"] == messenger_settings.TRANSPORTS


def test_the_sync_transport_is_named_sync() -> None:
    assert SYNC_TRANSPORT == "sync"


def test_each_key_is_read_from_the_setting(settings: Any) -> None:
    settings.MESSENGER = {
        "DEFAULT_TRANSPORT": "sync",
        "ROUTING": {"testapp.*": "async"},
        "PUBLISH_TIMEOUT": 1.5,
        "CONFIRM_DELIVERY": False,
        "RETRY_AFTER": 30,
        "MAX_MESSAGE_SIZE": 2048,
        "USER_STAMP": True,
    }

    assert messenger_settings.DEFAULT_TRANSPORT == "sync"
    assert messenger_settings.ROUTING == {"testapp.*": "async"}
    assert messenger_settings.PUBLISH_TIMEOUT == 1.5
    assert messenger_settings.CONFIRM_DELIVERY is False
    assert messenger_settings.RETRY_AFTER == 30
    assert messenger_settings.MAX_MESSAGE_SIZE == 2048
    assert messenger_settings.USER_STAMP is True


def test_values_are_coerced_to_their_types(settings: Any) -> None:
    settings.MESSENGER = {"PUBLISH_TIMEOUT": 2, "RETRY_AFTER": "7", "CONFIRM_DELIVERY": 0}

    assert messenger_settings.PUBLISH_TIMEOUT == 2.0
    assert isinstance(messenger_settings.PUBLISH_TIMEOUT, float)
    assert messenger_settings.RETRY_AFTER == 7
    assert messenger_settings.CONFIRM_DELIVERY is False


def test_a_messenger_setting_that_is_not_a_dict_raises(settings: Any) -> None:
    settings.MESSENGER = ["DEFAULT_TRANSPORT", "sync"]

    with pytest.raises(ImproperlyConfigured, match="settings.MESSENGER must be a dict, not list"):
        messenger_settings.DEFAULT_TRANSPORT  # noqa: B018


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PUBLISH_TIMEOUT", "soon"),
        ("DELAY_HOP", None),
        ("RETRY_AFTER", "5s"),
        ("ROUTING", ["*"]),
        # a deadline of 0 (or less, or none) would make every send a 503, not a start-up error
        ("PUBLISH_TIMEOUT", 0),
        ("PUBLISH_TIMEOUT", -1),
        ("PUBLISH_TIMEOUT", float("inf")),
        # "false" is a true string: it must not turn confirms (or the user stamp) on silently
        ("CONFIRM_DELIVERY", "false"),
        ("USER_STAMP", "no"),
    ],
)
def test_a_value_that_cannot_be_read_as_its_type_names_the_key(settings: Any, key: str, value: Any) -> None:
    # Given a key whose value is not of its type
    settings.MESSENGER = {key: value}

    # Then reading any setting says which key, and what it holds
    with pytest.raises(ImproperlyConfigured, match=re.escape(f"MESSENGER[{key!r}] is {value!r}")):
        messenger_settings.DEFAULT_TRANSPORT  # noqa: B018


def test_the_settings_are_a_frozen_dataclass() -> None:
    # Given the settings object read from MESSENGER
    current = conf.messenger_settings.current  # type: ignore[attr-defined]

    # Then it is a MessengerSettings instance whose fields cannot be reassigned
    assert isinstance(current, MessengerSettings)
    with pytest.raises(AttributeError):
        current.RETRY_AFTER = 1  # type: ignore[misc]


def test_the_removed_publisher_key_is_not_a_setting(settings: Any) -> None:
    # Given a MESSENGER that still names the removed PUBLISHER key (E009 reports it)
    settings.MESSENGER = {"PUBLISHER": "pipelined"}

    # Then the settings have no such field, and the other keys still read
    assert "PUBLISHER" not in {field.name for field in dataclasses.fields(MessengerSettings)}
    assert "PUBLISHER" not in DEFAULTS
    assert messenger_settings.DEFAULT_TRANSPORT == "async"


def test_unknown_keys_are_ignored(settings: Any) -> None:
    settings.MESSENGER = {"NO_SUCH_KEY": 1, "RETRY_AFTER": 9}

    assert messenger_settings.RETRY_AFTER == 9


# -- TRANSPORTS -----------------------------------------------------------------------


def test_options_of_the_async_transport_merge_with_its_defaults(settings: Any) -> None:
    settings.MESSENGER = {"TRANSPORTS": {"async": {"priority": 5}}}

    assert messenger_settings.TRANSPORTS == {"async": {"queue_name": "default", "priority": 5}}


def test_the_async_queue_name_can_be_replaced(settings: Any) -> None:
    settings.MESSENGER = {"TRANSPORTS": {"async": {"queue_name": "messenger"}}}

    assert messenger_settings.TRANSPORTS == {"async": {"queue_name": "messenger"}}
    assert messenger_settings.queue_name("async") == "messenger"


def test_a_new_transport_is_added_next_to_async(settings: Any) -> None:
    settings.MESSENGER = {"TRANSPORTS": {"bulk": {"queue_name": "bulk"}, "bare": None}}

    assert messenger_settings.TRANSPORTS == {
        "async": {"queue_name": "default"},
        "bulk": {"queue_name": "bulk"},
        "bare": {},
    }
    assert messenger_settings.queue_name("bulk") == "bulk"
    assert messenger_settings.queue_name("bare") == "default"


def test_the_queue_of_an_unknown_transport_is_default() -> None:
    assert messenger_settings.queue_name("nowhere") == "default"


def test_merging_does_not_change_the_defaults_or_the_setting(settings: Any) -> None:
    user_transports = {"async": {"queue_name": "mine"}}
    settings.MESSENGER = {"TRANSPORTS": user_transports}

    transports = messenger_settings.TRANSPORTS
    with pytest.raises(TypeError):
        transports["async"]["queue_name"] = "mutated"  # type: ignore[index]
    user_transports["async"]["queue_name"] = "changed after reading"

    assert DEFAULTS["TRANSPORTS"] == {"async": {"queue_name": "default"}}
    assert messenger_settings.TRANSPORTS == {"async": {"queue_name": "mine"}}


def test_routing_is_a_read_only_copy(settings: Any) -> None:
    routing = {"*": "sync"}
    settings.MESSENGER = {"ROUTING": routing}

    with pytest.raises(TypeError):
        messenger_settings.ROUTING["*"] = "mutated"  # type: ignore[index]
    routing["*"] = "changed after reading"

    assert messenger_settings.ROUTING == {"*": "sync"}


# -- reloading ------------------------------------------------------------------------


def test_the_settings_reload_when_messenger_changes(settings: Any) -> None:
    # Given a value read (and cached) from the setting
    settings.MESSENGER = {"RETRY_AFTER": 1}
    assert messenger_settings.RETRY_AFTER == 1

    # When the setting changes
    settings.MESSENGER = {"RETRY_AFTER": 2}

    # Then the new value is read
    assert messenger_settings.RETRY_AFTER == 2


def test_an_unrelated_setting_change_keeps_the_cache(settings: Any) -> None:
    cached = conf.messenger_settings.current  # type: ignore[attr-defined]

    settings.DEBUG = not settings.DEBUG

    assert conf.messenger_settings.current is cached  # type: ignore[attr-defined]


def test_values_are_cached_until_reload() -> None:
    fresh = conf._LazySettings()
    first = fresh.current

    assert fresh.current is first
    fresh.reload()
    assert fresh.current is not first
    assert fresh.current == first


def test_reload_callbacks_run_when_messenger_changes(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a callback registered for reloads
    calls: list[str] = []
    monkeypatch.setattr(conf, "_reload_callbacks", list(conf._reload_callbacks))
    on_reload(lambda: calls.append("reloaded"))

    # When MESSENGER changes, and then another setting
    settings.MESSENGER = {"DEFAULT_TRANSPORT": "sync"}
    settings.DEBUG = not settings.DEBUG

    # Then it ran once, for MESSENGER only
    assert calls == ["reloaded"]


def test_on_reload_returns_the_callback_for_use_as_a_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conf, "_reload_callbacks", [])

    def callback() -> None: ...

    assert on_reload(callback) is callback
    assert conf._reload_callbacks == [callback]


def test_the_async_http_settings(settings: Any) -> None:
    # Given the defaults, then values of each kind
    del settings.MESSENGER
    assert (messenger_settings.STATUS, messenger_settings.IDEMPOTENCY) == (False, "")
    assert messenger_settings.IDEMPOTENCY_TTL == 24 * 3600
    assert messenger_settings.STATUS_TTL == 7 * 24 * 3600
    assert messenger_settings.IDEMPOTENCY_CACHE is None

    settings.MESSENGER = {"IDEMPOTENCY": True, "STATUS": 1, "IDEMPOTENCY_TTL": "60"}
    assert (messenger_settings.IDEMPOTENCY, messenger_settings.STATUS) == ("optional", True)
    assert messenger_settings.IDEMPOTENCY_TTL == 60.0

    settings.MESSENGER = {"IDEMPOTENCY": "required"}
    assert messenger_settings.IDEMPOTENCY == "required"


@pytest.mark.parametrize(
    ("key", "value"),
    [("IDEMPOTENCY", "always"), ("IDEMPOTENCY_TTL", 0), ("STATUS", "yes"), ("IDEMPOTENCY_CACHE", "")],
)
def test_a_bad_async_http_setting_names_the_key(settings: Any, key: str, value: Any) -> None:
    settings.MESSENGER = {key: value}

    with pytest.raises(ImproperlyConfigured, match=re.escape(f"MESSENGER[{key!r}]")):
        messenger_settings.STATUS  # noqa: B018
