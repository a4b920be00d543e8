"""Settings of the processes that integration tests start: the test app on RabbitMQ (or Redis).

The web server and ``rundramatiq`` workers read the test database's name and a
queue name unique to the test run from the environment the tests give them.
"""

import os

from tests.settings import *  # noqa: F403

DATABASES["default"]["NAME"] = os.environ["MESSENGER_TEST_DB_NAME"]  # noqa: F405
DATABASES["default"]["ATOMIC_REQUESTS"] = os.environ.get("MESSENGER_ATOMIC_REQUESTS") == "1"  # noqa: F405
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("MESSENGER_CONN_MAX_AGE", "0"))  # noqa: F405

#: Which broker the processes use: "rabbitmq" (the default), "redis", "sqs", "postgres", "kafka" or
#: "pubsub" (the contract suite's other brokers, tests/integration/contract/). MESSENGER_BROKER_URL
#: points either at the server or at a FaultProxy in front of it; on PostgreSQL the broker is the
#: database, so MESSENGER_TEST_DB_PORT (tests/settings.py) does that.
BROKER = os.environ.get("MESSENGER_TEST_BROKER", "rabbitmq")
if BROKER == "postgres":
    # psycopg's connect_timeout (at least 2 s) bounds connecting; PUBLISH_TIMEOUT bounds the INSERT
    DATABASES["default"]["OPTIONS"] = {"connect_timeout": 2}  # noqa: F405
    DRAMATIQ_BROKER = {
        # dramatiq-postgres' broker, enqueuing on Django's connection (django_messenger.W010 otherwise)
        "BROKER": "django_messenger.brokers.postgres.PostgresBroker",
        "OPTIONS": {
            # The queue tables of the test run's own schema, in the test database
            "schema": os.environ["MESSENGER_PG_SCHEMA"],
            # A dead worker's claimed rows come back after this long without its heartbeat
            "heartbeat_interval": 1.0,
            "heartbeat_ttl": float(os.environ.get("MESSENGER_PG_HEARTBEAT_TTL", "60")),
            "maintenance_interval": 1.0,
            "poll_interval": 0.5,
        },
        "MIDDLEWARE": DRAMATIQ_BROKER["MIDDLEWARE"],  # noqa: F405  (the unit tests' list)
    }
elif BROKER == "redis":
    DRAMATIQ_BROKER = {
        # Dramatiq's own, or messenger's (MESSENGER_REDIS_BROKER=django_messenger.brokers.redis.RedisBroker)
        "BROKER": os.environ.get("MESSENGER_REDIS_BROKER", "dramatiq.brokers.redis.RedisBroker"),
        "OPTIONS": {
            # redis-py reads its socket timeouts from the URL only; connecting plus answering
            # within PUBLISH_TIMEOUT (django_messenger.W006)
            "url": os.environ.get("MESSENGER_BROKER_URL", "redis://127.0.0.1:6379/0")
            + "?socket_timeout={0}&socket_connect_timeout={0}".format(
                float(os.environ.get("MESSENGER_PUBLISH_TIMEOUT", "5")) / 2
            ),
            # A namespace of the test run's own, so that runs sharing the server do not collide
            "namespace": os.environ["MESSENGER_REDIS_NAMESPACE"],
            # A dead worker's messages come back after this long without its heartbeat
            "heartbeat_timeout": int(os.environ.get("MESSENGER_REDIS_HEARTBEAT_TIMEOUT", "60000")),
            "maintenance_chance": int(os.environ.get("MESSENGER_REDIS_MAINTENANCE_CHANCE", "1000")),
        },
        "MIDDLEWARE": DRAMATIQ_BROKER["MIDDLEWARE"],  # noqa: F405  (the unit tests' list)
    }
elif BROKER == "sqs":
    DRAMATIQ_BROKER = {
        # moto's SQS server (tests/moto.py); credentials and region from AWS_* in the environment
        "BROKER": "django_messenger.brokers.sqs.SQSBroker",
        "OPTIONS": {
            "endpoint_url": os.environ["MESSENGER_BROKER_URL"],
            "region_name": "us-east-1",
            # short, so that a SIGKILLed worker's messages come back within seconds
            "visibility_timeout": int(os.environ.get("MESSENGER_SQS_VISIBILITY_TIMEOUT", "10")),
            # deliveries before SQS's redrive policy dead-letters a message (queues created by the run)
            "max_receives": int(os.environ.get("MESSENGER_SQS_MAX_RECEIVES", "5")),
        },
        "MIDDLEWARE": DRAMATIQ_BROKER["MIDDLEWARE"],  # noqa: F405  (the unit tests' list)
    }
elif BROKER == "kafka":
    DRAMATIQ_BROKER = {
        # a tansu server of the run (tests/tansu.py), reached through MESSENGER_BROKER_URL (host:port)
        "BROKER": "django_messenger.brokers.kafka.KafkaBroker",
        "OPTIONS": {
            "bootstrap_servers": os.environ["MESSENGER_BROKER_URL"],
            "group_id": "messenger-contract",
            # tansu's group joins take about 23 s with librdkafka's default of 45 s
            "session_timeout_ms": 6000,
            "partitions": 3,
            # tansu is one broker: one replica is all there is (django_messenger.W018, silenced below)
            "replication_factor": 1,
        },
        "MIDDLEWARE": DRAMATIQ_BROKER["MIDDLEWARE"],  # noqa: F405  (the unit tests' list)
    }
    SILENCED_SYSTEM_CHECKS = ["django_messenger.W018"]
elif BROKER == "pubsub":
    DRAMATIQ_BROKER = {
        # Google's Pub/Sub emulator (tests/pubsub_emulator.py), found through PUBSUB_EMULATOR_HOST
        "BROKER": "django_messenger.brokers.pubsub.PubSubBroker",
        "OPTIONS": {
            "project_id": "messenger-test",
            # the run's own topics and subscriptions
            "namespace": os.environ.get("MESSENGER_PUBSUB_NAMESPACE", "messenger"),
            # short, so that a SIGKILLed worker's messages come back within seconds
            "ack_deadline": int(os.environ.get("MESSENGER_PUBSUB_ACK_DEADLINE", "10")),
            "min_backoff": 1,
            "max_backoff": 5,
        },
        "MIDDLEWARE": DRAMATIQ_BROKER["MIDDLEWARE"],  # noqa: F405  (the unit tests' list)
    }
else:
    _AMQP_QUERY = "?heartbeat=30&blocked_connection_timeout=" + os.environ.get(
        "MESSENGER_BLOCKED_CONNECTION_TIMEOUT", "10"
    )
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        "OPTIONS": {
            # Several URLs, separated by ";" (a cluster's nodes, tried in order), as Dramatiq takes them
            "url": ";".join(
                url + _AMQP_QUERY
                for url in os.environ.get(
                    "MESSENGER_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"
                ).split(";")
            ),
            "confirm_delivery": True,
        },
        "MIDDLEWARE": DRAMATIQ_BROKER["MIDDLEWARE"],  # noqa: F405  (the unit tests' list)
    }
MESSENGER = {
    "DEFAULT_TRANSPORT": "async",
    "TRANSPORTS": {
        "async": {
            "queue_name": os.environ["MESSENGER_QUEUE"],
            # "quorum" on the RabbitMQ cluster of tests/integration/test_cluster.py
            "queue_type": os.environ.get("MESSENGER_QUEUE_TYPE", "classic"),
        }
    },
    "PUBLISH_TIMEOUT": float(os.environ.get("MESSENGER_PUBLISH_TIMEOUT", "5")),
    "DELAY_HOP": float(os.environ.get("MESSENGER_DELAY_HOP", "600")),
}
if os.environ.get("MESSENGER_OUTBOX") == "1":  # the transactional outbox (tests/integration/test_outbox.py)
    MESSENGER["TRANSPORTS"]["async"]["outbox"] = True  # type: ignore[index]
    MESSENGER["OUTBOX_POLL_INTERVAL"] = float(os.environ.get("MESSENGER_OUTBOX_POLL_INTERVAL", "0.5"))
if "MESSENGER_MAX_MESSAGE_SIZE" in os.environ:  # a broker that takes less than the default (SQS)
    MESSENGER["MAX_MESSAGE_SIZE"] = int(os.environ["MESSENGER_MAX_MESSAGE_SIZE"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_messenger": {"handlers": ["console"], "level": os.environ.get("MESSENGER_LOG_LEVEL", "INFO")}
    },
}
# Basic credentials too (after the session, so an anonymous write is still a 403, not a 401): the
# status resource of tracked writes (django_messenger.urls) uses the project's authentication.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
}
