"""The integration settings of the operations tests (messenger_stats, the admin dashboard).

The admin's static files are served (tests/integration/dashboard_wsgi.py), so that the browser
test's screenshots show the admin as deployed; ``MESSENGER_RABBITMQ_MANAGEMENT_URL`` sets
``MESSENGER["RABBITMQ_MANAGEMENT_URL"]``.
"""

import os

from tests.integration.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.staticfiles"]  # noqa: F405
STATIC_URL = "/static/"
MESSENGER = {**MESSENGER, "RABBITMQ_MANAGEMENT_URL": os.environ.get("MESSENGER_RABBITMQ_MANAGEMENT_URL")}  # noqa: F405
