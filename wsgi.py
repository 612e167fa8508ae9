"""WSGI entry point for any WSGI server: `gunicorn wsgi:app` (settings from the environment)."""

from allocator import create_app

app = create_app()
