"""WSGI entry point (gunicorn covidsite.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "covidsite.settings")
application = get_wsgi_application()
