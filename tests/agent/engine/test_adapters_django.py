# ruff: noqa: E501 - the subprocess script's edits read best on one line
"""Django edited live, in a subprocess (Django is configured once per process): views and
URLconfs re-read, admin re-registered, a model kept with its ``_meta``, a changed model
refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django")

SRC = Path(__file__).resolve().parents[3] / "labs" / "apps" / "django" / "src"

SCRIPT = r"""
import json, os, sys, time
from pathlib import Path
root = Path(sys.argv[1])
sys.path.insert(0, str(root))
sys.dont_write_bytecode = True
os.environ["DJANGO_SETTINGS_MODULE"] = "shopsite.settings"
os.environ["LAB_DB"] = str(root / "db.sqlite3")
import django
django.setup()
from django.core.management import call_command
from django.test import Client
from django.contrib import admin
from reloadctl.agent import reload_modules
call_command("migrate", run_syncdb=True, verbosity=0)
from books.models import Book
import books.admin
held = Book.objects.create(title="Dune", pages=412)
meta = Book._meta
client = Client()
out = {"before": client.get("/books/").json()}

def edit(rel, old, new):
    path = root / rel
    path.write_text(path.read_text().replace(old, new))
    stamp = time.time() + 10
    os.utime(path, (stamp, stamp))

def reload(*names):
    return [[r.status, r.error.message if r.error else None, list(r.warnings)]
            for r in reload_modules(list(names))]

edit("books/models.py", 'f"{self.title} ({self.pages} p.)"', 'f"{self.title}!"')
out["method"] = reload("books.models")
out["held"] = held.label()
out["meta kept"] = Book._meta is meta and Book.objects.get(pk=held.pk).label() == "Dune!"
edit("books/models.py", "    pages = models.IntegerField(default=100)\n",
     "    pages = models.IntegerField(default=100)\n    isbn = models.CharField(max_length=13, default='')\n")
out["field"] = reload("books.models")
out["after refusal"] = [Book._meta is meta, [f.name for f in Book._meta.fields], held.label()]
edit("books/models.py", "    isbn = models.CharField(max_length=13, default='')\n", "")
edit("books/views.py", "def detail(", "def new(request):\n    return HttpResponse('new')\n\n\ndef detail(")
edit("books/urls.py", '    path("<int:pk>/", views.detail),', '    path("<int:pk>/", views.detail),\n    path("new/", views.new),')
out["url"] = reload("books.views", "books.urls")
out["new page"] = [client.get("/books/new/").status_code, client.get("/books/new/").content.decode()]
edit("books/admin.py", 'list_display = ("title",)', 'list_display = ("title", "pages")')
out["admin"] = reload("books.admin")
out["list_display"] = list(admin.site._registry[Book].list_display)
print(json.dumps(out))
"""


def test_django_project_edits(tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(SRC, root)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["before"]["books"] == ["Dune (412 p.)"]
    assert got["method"] == [["reloaded", None, []]]
    assert got["held"] == "Dune!" and got["meta kept"] is True
    ((status, reason, _),) = got["field"]
    assert status == "refused" and "field isbn added" in reason and "migration" in reason
    assert got["after refusal"] == [True, ["id", "title", "pages"], "Dune!"]
    assert [r[0] for r in got["url"]] == ["reloaded", "reloaded"]
    assert got["new page"] == [200, "new"]
    assert got["admin"][0][0] == "reloaded" and got["list_display"] == ["title", "pages"]
