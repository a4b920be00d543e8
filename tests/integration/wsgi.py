"""WSGI entry point of the integration tests' web server (gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.settings")

application = get_wsgi_application()
