"""A small Flask site: the app module, a views module registering on the same app."""

from site_app.app import app
from site_app import views

__all__ = ["app", "views"]
