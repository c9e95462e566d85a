"""WSGI entry point (gunicorn covidsite.wsgi)."""

import os
from importlib import import_module

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "covidsite.settings")
application = get_wsgi_application()
# Import the URL modules (and with them every view and the statistics and figure libraries) while the
# worker boots, not during a user's first request: that takes seconds.
import_module(settings.ROOT_URLCONF)
