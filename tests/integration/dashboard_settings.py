"""The integration settings with the admin's static files served (tests/integration/dashboard_wsgi.py)."""

from tests.integration.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.staticfiles"]  # noqa: F405
STATIC_URL = "/static/"
