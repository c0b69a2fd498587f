"""Django project served for real: wsgiref's HTTP server on 127.0.0.1, a SQLite file."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edits import Edit

MODULES = (
    "books",
    "books.models",
    "books.views",
    "books.urls",
    "books.admin",
    "shopsite.urls",
    "books.extra",
)
QUICK = "view body"
PATHS = ["/books/", "/books/1/", "/books/new/", "/books/extra/"]


def start(root: Path) -> dict[str, Any]:
    os.environ["DJANGO_SETTINGS_MODULE"] = "shopsite.settings"
    os.environ["LAB_DB"] = str(root / f"db-{os.getpid()}.sqlite3")
    import django

    django.setup()
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    call_command("migrate", run_syncdb=True, verbosity=0)
    from books.models import Book

    held = Book.objects.create(title="Dune", pages=412)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, name="django-lab", daemon=True)
    thread.start()
    return {"server": server, "thread": thread, "held": held}


def _get(port: int, path: str) -> list[Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return [resp.status, resp.read().decode()]
    except urllib.error.HTTPError as err:
        return [err.code, ""]


def probe(state: dict[str, Any]) -> dict[str, Any]:
    from django.contrib import admin

    port = state["server"].server_port
    answers: dict[str, Any] = {p: _get(port, p) for p in PATHS}
    try:
        answers["held.label"] = state["held"].label()
    except Exception as exc:
        answers["held.label"] = type(exc).__name__
    answers["admin"] = sorted(
        [m._meta.label, type(a).__name__, list(a.list_display)]
        for m, a in admin.site._registry.items()
        if m._meta.app_label == "books"
    )
    return answers


def stop(state: dict[str, Any]) -> None:
    state["server"].shutdown()
    state["thread"].join(timeout=5)


EDITS = [
    Edit(
        "view body",
        "edit a handler body",
        {"books/views.py": ('{"shelf": SHELF,', '{"shelf": SHELF.upper(),')},
    ),
    Edit("constant", "change a constant", {"books/views.py": ('SHELF = "main"', 'SHELF = "side"')}),
    Edit(
        "model method",
        "change a model method",
        {
            "books/models.py": (
                'f"{self.title} ({self.pages} p.)"',
                'f"{self.title}, {self.pages} pages"',
            )
        },
    ),
    Edit(
        "add model field",
        "add a model field",
        {
            "books/models.py": (
                "    pages = models.IntegerField(default=100)\n",
                "    pages = models.IntegerField(default=100)\n    isbn = models.CharField(max_length=13, default='')\n",
            )
        },
    ),
    Edit(
        "add URL",
        "add a route",
        {
            "books/views.py": (
                "def detail(",
                "def new(request):\n    return HttpResponse('new')\n\n\ndef detail(",
            ),
            "books/urls.py": (
                '    path("<int:pk>/", views.detail),',
                '    path("<int:pk>/", views.detail),\n    path("new/", views.new),',
            ),
        },
    ),
    Edit(
        "admin options",
        "change a decorator's arguments",
        {"books/admin.py": ('list_display = ("title",)', 'list_display = ("title", "pages")')},
    ),
    Edit(
        "rename view",
        "rename a function",
        {
            "books/views.py": ("def detail(", "def show("),
            "books/urls.py": ("views.detail", "views.show"),
        },
    ),
    Edit(
        "add module",
        "add a module to a package",
        {
            "books/extra.py": "from django.http import HttpResponse\n\n\ndef extra(request):\n    return HttpResponse('extra')\n",
            "books/urls.py": [
                ("from books import views", "from books import extra, views"),
                (
                    '    path("<int:pk>/", views.detail),',
                    '    path("<int:pk>/", views.detail),\n    path("extra/", extra.extra),',
                ),
            ],
        },
    ),
]
