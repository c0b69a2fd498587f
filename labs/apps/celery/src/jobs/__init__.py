"""Celery tasks: the app module and a tasks module."""
