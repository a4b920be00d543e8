"""System checks of idempotent handlers: E016 (their records cannot be kept), W016 (HANDLED_TTL)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from django_messenger import handler
from django_messenger.checks import check_idempotent_handlers
from django_messenger.locator import locator


@dataclasses.dataclass
class Invoice:
    number: int


def ids(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def test_the_test_app_s_idempotent_handlers_pass() -> None:
    assert any(h.idempotent is True for h in locator.handlers)
    assert check_idempotent_handlers() == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"idempotent": "yes"}, "idempotent='yes' is not True or False"),
        ({"idempotent": 1}, "idempotent=1 is not True or False"),
        ({"using": "default"}, "using='default' names the database of an idempotent handler's records"),
        (
            {"idempotent": True, "using": "elsewhere"},
            "the database 'elsewhere', which is not in settings.DATABASES",
        ),
        ({"idempotent": True, "actor_name": "x" * 256}, "longer than the 255 characters a record holds"),
    ],
)
def test_e016_options_that_cannot_give_exactly_once_effects(
    scratch: Any, options: dict[str, Any], expected: str
) -> None:
    @handler(**options)
    def bill(message: Invoice) -> None: ...

    [error] = check_idempotent_handlers()
    assert error.id == "django_messenger.E016"
    assert expected in error.msg
    assert error.obj == f"{bill.__module__}.{bill.__qualname__}"


def test_e016_a_database_the_routers_never_migrate_the_records_to(scratch: Any, settings: Any) -> None:
    settings.DATABASE_ROUTERS = ["tests.test_checks_once.NoMessengerTables"]

    @handler(idempotent=True)
    def bill(message: Invoice) -> None: ...

    errors = [error for error in check_idempotent_handlers() if error.obj.endswith(".bill")]
    assert ids(errors) == ["django_messenger.E016"]
    assert "never migrate django_messenger.HandledMessage to the database 'default'" in errors[0].msg


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_e016_a_database_with_autocommit_off(scratch: Any, settings: Any) -> None:
    settings.DATABASES = {
        **settings.DATABASES,
        "default": {**settings.DATABASES["default"], "AUTOCOMMIT": False},
    }

    @handler(idempotent=True)
    def bill(message: Invoice) -> None: ...

    errors = [error for error in check_idempotent_handlers() if error.obj.endswith(".bill")]
    assert ids(errors) == ["django_messenger.E016"]
    assert "AUTOCOMMIT off" in errors[0].msg


class NoMessengerTables:
    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return False if app_label == "django_messenger" else None


def test_w016_a_handled_ttl_under_a_day_while_idempotent_handlers_exist(settings: Any) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "HANDLED_TTL": 3600}

    [warning] = check_idempotent_handlers()

    assert warning.id == "django_messenger.W016"
    assert "MESSENGER['HANDLED_TTL'] is 3600 s" in warning.msg


def test_no_w016_without_idempotent_handlers(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.MESSENGER = {**settings.MESSENGER, "HANDLED_TTL": 3600}
    monkeypatch.setattr(locator, "handlers", [h for h in locator.handlers if h.idempotent is not True])

    assert check_idempotent_handlers() == []
