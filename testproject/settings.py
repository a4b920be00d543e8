"""Settings of the demo project.

Out of the box it needs no service: SQLite in ``testproject/db.sqlite3`` (or the file
``DEMO_SQLITE_PATH`` names) and the
``sync`` transport, which runs handlers inside the request. Environment variables
switch it to the real thing:

- ``MESSENGER_BROKER_URL=amqp://guest:guest@127.0.0.1:5672`` sends every message to
  RabbitMQ (``MESSENGER_QUEUE`` names the queue, ``messenger`` by default); run
  ``python manage.py rundramatiq`` beside the web process to handle them.
- ``DEMO_DB=postgres`` uses PostgreSQL on 127.0.0.1:5432 as user ``postgres``,
  database ``DEMO_DB_NAME`` (``test`` by default).

The demo documents itself: its OpenAPI schema, made by drf-spectacular (the ``[openapi]``
extra), is served at ``/schema/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-demo-only-never-use-in-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_dramatiq",
    "django_messenger",
    "testproject.accounts",
    "testproject.library",
    "drf_spectacular",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if os.environ.get("DEMO_DB") == "postgres":
    DATABASES: dict[str, dict[str, Any]] = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("DEMO_DB_NAME", "test"),
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DEMO_SQLITE_PATH", BASE_DIR / "db.sqlite3"),
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

REST_FRAMEWORK = {
    # A demo: anyone may write. A real project keeps DRF's authentication and permissions,
    # which run before anything is dispatched.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "django-messenger demo",
    "DESCRIPTION": "Reads are plain DRF; every write is dispatched through the message bus.",
    "VERSION": "1.0.0",
    # Request bodies get components of their own, so that a required text field says it
    # may not be blank (minLength 1) and read-only fields are left out of them.
    "COMPONENT_SPLIT_REQUEST": True,
    # The schema documents JSON bodies: a form cannot tell null from "" (the browsable API's
    # HTML forms still work, they are for people).
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
}

_DRAMATIQ_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Retries",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
]


def _with_connection_defaults(url: str) -> str:
    """``url`` with a heartbeat and a blocked-connection timeout, unless it sets its own.

    Dramatiq's RabbitmqBroker refuses pika keyword parameters beside ``url``, so they
    travel in the URL's query string, which pika's ``URLParameters`` reads.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("heartbeat", "30")
    query.setdefault("blocked_connection_timeout", "10")
    return urlunsplit(parts._replace(query=urlencode(query)))


# Workers refuse to parse an oversized message before reading it (check django_messenger.W005).
DRAMATIQ_ENCODER = "django_messenger.dramatiq_encoder.BoundedJSONEncoder"

MESSENGER_BROKER_URL = os.environ.get("MESSENGER_BROKER_URL", "")

if MESSENGER_BROKER_URL:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        "OPTIONS": {
            "url": _with_connection_defaults(MESSENGER_BROKER_URL),
            "confirm_delivery": True,
        },
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
    MESSENGER: dict[str, Any] = {
        "DEFAULT_TRANSPORT": "async",
        "TRANSPORTS": {"async": {"queue_name": os.environ.get("MESSENGER_QUEUE", "messenger")}},
    }
else:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": _DRAMATIQ_MIDDLEWARE,
    }
    MESSENGER = {"DEFAULT_TRANSPORT": "sync"}
