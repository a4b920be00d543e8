"""Importing the app builds no broker: nothing calls Dramatiq's get_broker() at import time."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.processes import ROOT

MODULES = [
    "django_messenger",
    "django_messenger.bus",
    "django_messenger.mixins",
    "django_messenger.viewsets",
    "django_messenger.persisters",
    "django_messenger.routing",
    "django_messenger.encoding",
    "django_messenger.actors",
    "django_messenger.publishing",
    "django_messenger.publishing.rabbitmq",
    "django_messenger.testing",
    "django_messenger.checks",
    "django_messenger.stamps",
    "django_messenger.delays",
]


def test_importing_every_module_sets_no_global_broker():
    code = (
        "import django; from django.conf import settings; settings.configure(INSTALLED_APPS=[]); "
        f"import {', '.join(MODULES)}; "
        "import dramatiq.broker; assert dramatiq.broker.global_broker is None, dramatiq.broker.global_broker"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
