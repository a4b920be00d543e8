"""Settings of the benchmark project, chosen per process by environment variables.

- ``BENCH_PREFIX``: prefix of every queue this run uses (the scripts make a unique one and
  delete the queues at the end).
- ``BENCH_CONFIRM``: ``1`` (default) gives the Dramatiq broker ``confirm_delivery=True`` and
  leaves ``MESSENGER["CONFIRM_DELIVERY"]`` on; ``0`` turns both off (at-most-once).
- ``BENCH_MESSENGER``: ``0`` leaves django_messenger out of INSTALLED_APPS: a plain
  django-dramatiq project (the worker benchmark's RSS baseline).
- ``BENCH_OUTBOX``: ``1`` puts the transactional outbox in front of the broker: the messenger
  view writes a row of the PostgreSQL database ``BENCH_OUTBOX_DB`` (on ``BENCH_PG_HOST``,
  ``BENCH_PG_PORT``, as ``BENCH_PG_USER``; persistent connections) instead of publishing, and a
  ``messenger_relay`` process publishes the rows.
- ``BENCH_DB``: the name of a PostgreSQL database (on ``BENCH_PG_*``, persistent connections)
  that is the project's ``default`` database, without the outbox: issue 11's pieces that keep
  rows there (status records, Idempotency-Key's keys, idempotent handlers' records).
- ``BENCH_IDEMPOTENCY_CACHE``: ``1`` keeps Idempotency-Key's keys in a Redis cache
  (``BENCH_REDIS_URL``, keys under the prefix ``BENCH_PREFIX``) instead of the database.
- ``BENCH_E2E_UDP_PORT``: where the end-to-end handlers report when they started.
- ``BENCH_BROKER``: the broker, by its name in ``benchmarks.brokers.BROKERS`` (``rabbitmq``
  by default, ``redis``, ``sqs`` or ``postgres``); that entry gives ``DRAMATIQ_BROKER``'s class
  and options and reads its own variables (``BENCH_AMQP_URL``, ``BENCH_REDIS_URL``,
  ``BENCH_SQS_URL``, ``BENCH_PG_*``).

Every side uses the same broker URL, options and Dramatiq middleware list; Django's own
middleware list is empty and DRF authenticates nobody, so the views measure the layers
under test and nothing else.
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks.brokers import selected

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
CONFIRM = os.environ.get("BENCH_CONFIRM", "1") == "1"
WITH_MESSENGER = os.environ.get("BENCH_MESSENGER", "1") == "1"
BROKER = selected()
OUTBOX = os.environ.get("BENCH_OUTBOX") == "1"
#: The PostgreSQL database of the outbox (g), or of issue 11's pieces (h, i, j, the tracked and
#: idempotent workers); None: the in-memory SQLite (or the postgres broker's database)
PG_DATABASE = os.environ["BENCH_OUTBOX_DB"] if OUTBOX else os.environ.get("BENCH_DB")
IDEMPOTENCY_CACHE = os.environ.get("BENCH_IDEMPOTENCY_CACHE") == "1"
SUFFIX = "o" if OUTBOX else "c" if CONFIRM else "n"

SECRET_KEY = "benchmarks-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "benchmarks.project.urls"
WSGI_APPLICATION = "benchmarks.project.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "django_dramatiq",
    *(["django_messenger"] if WITH_MESSENGER else []),
    "benchmarks.project.bench",
]
MIDDLEWARE: list[str] = []

# Nothing on the measured paths touches the database.
# ... but PostgreSQL as the broker (its enqueue runs on Django's connection: BROKER.databases()).
DATABASES = BROKER.databases() or {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
if PG_DATABASE:  # ... but the outbox (its rows are the messages) and issue 11's rows
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
            "USER": os.environ.get("BENCH_PG_USER", "postgres"),
            "NAME": PG_DATABASE,
            "CONN_MAX_AGE": 600,
        }
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}

# What the docs tell every project to use (check W005): it also spares the worker a second
# encoding of each envelope to measure it.
DRAMATIQ_ENCODER = "django_messenger.dramatiq_encoder.BoundedJSONEncoder"
DRAMATIQ_BROKER: dict[str, Any] = {
    **BROKER.dramatiq_broker(PREFIX, CONFIRM),
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}

#: The queues of this process's variants (the scripts purge and delete them by these names).
MESSENGER_QUEUE = f"{PREFIX}-messenger-{SUFFIX}"
RAW_QUEUE = f"{PREFIX}-raw-{SUFFIX}"
CELERY_QUEUE = f"{PREFIX}-celery"

MESSENGER = {
    "DEFAULT_TRANSPORT": "async",
    "TRANSPORTS": {"async": {"queue_name": MESSENGER_QUEUE, "outbox": OUTBOX}},
    "CONFIRM_DELIVERY": CONFIRM,
    "OUTBOX_KEEP_SENT": 0,  # a published row is deleted at once: the table stays small
}

if IDEMPOTENCY_CACHE:  # (j): the keys in a cache every gunicorn worker shares
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "idempotency": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
            "KEY_PREFIX": PREFIX,
        },
    }
    MESSENGER["IDEMPOTENCY_CACHE"] = "idempotency"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_messenger": {"handlers": ["console"], "level": "WARNING"}},
}
