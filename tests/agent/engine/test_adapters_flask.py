"""Flask apps edited live: the app object the server holds (here the test client's) serves
what a restart of the new code would serve, or the reload warns."""

from __future__ import annotations

import pytest
from conftest import Kit

flask = pytest.importorskip("flask")

APP = """
from flask import Flask
app = Flask(__name__)
app.config["GREETING"] = "hello"

@app.route("/")
def index():
    return app.config["GREETING"] + " v1"

@app.route("/old")
def old():
    return "old"
"""


def test_recreated_app_is_merged_into_the_served_app(kit: Kit) -> None:
    kit.write("app", APP)
    m = kit.load("app")
    served = m.app
    client = served.test_client()
    assert client.get("/").text == "hello v1"  # the server has handled a request
    kit.write(
        "app",
        APP.replace('"hello"', '"hi"')
        .replace('@app.route("/old")\ndef old():\n    return "old"\n', "")
        .replace(" v1", " v2")
        + '\n@app.route("/new", methods=["POST"])\ndef new():\n    return "new"\n',
    )
    result = kit.ok("app")
    assert m.app is served
    assert client.get("/").text == "hi v2"
    assert client.post("/new").text == "new" and client.get("/new").status_code == 405
    assert client.get("/old").status_code == 404  # as after a restart
    kinds = {(a.kind, a.name.rpartition(" ")[2]) for a in result.actions}
    assert ("added", "new") in kinds and ("removed", "old") in kinds
    assert not result.warnings


def test_decorator_arguments_change(kit: Kit) -> None:
    kit.write("app", APP)
    m = kit.load("app")
    client = m.app.test_client()
    client.get("/")
    kit.write("app", APP.replace('@app.route("/")', '@app.route("/", methods=["GET", "POST"])'))
    kit.ok("app")
    assert client.post("/").text == "hello v1"


VIEWS = """
from __P__core import app

@app.route("/a")
def a():
    return "a1"
"""


def test_views_module_registers_again_on_the_held_app(kit: Kit) -> None:
    """Views in their own module: after the first request Flask forbids new routes; the
    reload re-registers this module's views like a fresh import would."""
    kit.write("core", "from flask import Flask\napp = Flask(__name__)\n")
    kit.write("views", VIEWS)
    core = kit.load("core")
    kit.load("views")
    client = core.app.test_client()
    assert client.get("/a").text == "a1"
    kit.write(
        "views",
        VIEWS.replace('"a1"', '"a2"') + '\n@app.route("/b")\ndef b():\n    return "b"\n',
    )
    kit.ok("views")
    assert client.get("/a").text == "a2" and client.get("/b").text == "b"
    kit.write("views", VIEWS)
    kit.ok("views")
    assert client.get("/b").status_code == 404 and client.get("/a").text == "a1"
    # a failing body leaves the app exactly as it was
    kit.write("views", VIEWS + "\nraise RuntimeError('x')\n")
    assert kit.reload_one("views").status == "failed"
    assert client.get("/a").text == "a1"
    with pytest.raises(AssertionError, match="can no longer be called"):
        core.app.add_url_rule("/late", "late", lambda: "x")  # Flask's guard is back


def test_app_module_reload_keeps_routes_of_views_modules(kit: Kit) -> None:
    kit.write("core", "from flask import Flask\napp = Flask(__name__)\nVERSION = 1\n")
    kit.write("views", VIEWS)
    core = kit.load("core")
    kit.load("views")
    client = core.app.test_client()
    client.get("/a")
    kit.write("core", "from flask import Flask\napp = Flask(__name__)\nVERSION = 2\n")
    kit.ok("core")
    assert client.get("/a").text == "a1" and core.VERSION == 2


def test_extension_on_the_discarded_app_is_warned(kit: Kit) -> None:
    kit.write("app", APP)
    m = kit.load("app")
    kit.write("app", APP + "\napp.extensions['cache'] = object()\n")
    result = kit.ok("app")
    assert any("extensions ['cache']" in w and "restart" in w for w in result.warnings)
    assert "cache" not in m.app.extensions


BP = """
from flask import Blueprint
bp = Blueprint("bp", __name__)

@bp.route("/x")
def x():
    return "x1"
"""


def test_recreated_blueprint_with_new_routes_is_warned(kit: Kit) -> None:
    kit.write("bps", BP)
    bps = kit.load("bps")
    app = flask.Flask("bp_host")
    app.register_blueprint(bps.bp)
    client = app.test_client()
    kit.write("bps", BP.replace('"x1"', '"x2"'))
    assert not kit.ok("bps").warnings  # a body edit: patched in place, no warning
    assert client.get("/x").text == "x2"
    kit.write("bps", BP + '\n@bp.route("/y")\ndef y():\n    return "y"\n')
    result = kit.ok("bps")
    assert any("blueprint 'bp' was re-created" in w for w in result.warnings)
