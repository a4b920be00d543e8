"""WSGI entry point of the benchmark project (gunicorn ``benchmarks.project.wsgi:application``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.project.settings")

application = get_wsgi_application()
