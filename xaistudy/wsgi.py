"""WSGI entry point (gunicorn xaistudy.wsgi). The web process never imports torch."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xaistudy.settings")
application = get_wsgi_application()
