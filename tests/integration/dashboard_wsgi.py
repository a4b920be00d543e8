"""The integration server with the admin's static files (for the browser test's screenshots).

The integration settings plus ``django.contrib.staticfiles``, served by its WSGI handler: the
admin pages the browser test looks at have their CSS, as on a deployed site.
"""

import os

from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.wsgi import get_wsgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.integration.dashboard_settings"

application = StaticFilesHandler(get_wsgi_application())
