"""Flask app served for real: werkzeug's server on 127.0.0.1 holds the app object."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edits import Edit

MODULES = ("site_app", "site_app.app", "site_app.views", "site_app.extra")
QUICK = "add route"

REQUESTS = [
    ("GET", "/", None),
    ("GET", "/items/3", None),
    ("POST", "/echo", {"a": 1}),
    ("PUT", "/echo", {"a": 2}),
    ("GET", "/about", None),
    ("GET", "/legacy", None),
    ("GET", "/health", None),
    ("GET", "/contact", None),
    ("GET", "/extra/ping", None),
]


def start(root: Path) -> dict[str, Any]:
    import site_app
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, site_app.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="flask-lab", daemon=True)
    thread.start()
    return {"server": server, "thread": thread, "port": server.server_port}


def _call(port: int, method: str, path: str, body: Any) -> list[Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return [resp.status, resp.read().decode(), resp.headers.get("X-Shop")]
    except urllib.error.HTTPError as err:
        return [err.code, "", err.headers.get("X-Shop")]


def probe(state: dict[str, Any]) -> dict[str, Any]:
    return {f"{m} {p}": _call(state["port"], m, p, b) for m, p, b in REQUESTS}


def stop(state: dict[str, Any]) -> None:
    state["server"].shutdown()
    state["thread"].join(timeout=5)


EDITS = [
    Edit(
        "view body",
        "edit a handler body",
        {"site_app/app.py": ('f"{GREETING} to the shop"', 'f"{GREETING} to the new shop"')},
    ),
    Edit(
        "add route",
        "add a route",
        {
            "site_app/app.py": (
                '@app.route("/legacy")',
                '@app.route("/health")\ndef health():\n    return "ok"\n\n\n@app.route("/legacy")',
            )
        },
    ),
    Edit(
        "add route in views module",
        "add a route",
        {
            "site_app/views.py": 'from site_app.app import app\n\n\n@app.route("/about")\n'
            'def about():\n    return "about v1"\n\n\n@app.route("/contact")\n'
            'def contact():\n    return "write to us"\n'
        },
    ),
    Edit(
        "remove route",
        "remove a route",
        {"site_app/app.py": ('@app.route("/legacy")\ndef legacy():\n    return "old page"\n', "")},
    ),
    Edit(
        "route methods",
        "change a decorator's arguments",
        {"site_app/app.py": ('methods=["POST"]', 'methods=["POST", "PUT"]')},
    ),
    Edit(
        "constant",
        "change a constant",
        {"site_app/app.py": ('GREETING = "welcome"', 'GREETING = "hello"')},
    ),
    Edit(
        "config value",
        "change a constant",
        {"site_app/app.py": ('app.config["PAGE_SIZE"] = 2', 'app.config["PAGE_SIZE"] = 3')},
    ),
    Edit(
        "rename view",
        "rename a function",
        {"site_app/views.py": ("def about():", "def about_page():")},
    ),
    Edit(
        "request hook",
        "add a hook",
        {
            "site_app/app.py": (
                '@app.route("/")',
                "@app.after_request\ndef tag(response):\n"
                '    response.headers["X-Shop"] = "1"\n    return response\n\n\n'
                '@app.route("/")',
            )
        },
    ),
    Edit(
        "add module (blueprint)",
        "add a module to a package",
        {
            "site_app/extra.py": "from flask import Blueprint\n\nbp = Blueprint('extra', __name__)\n\n\n"
            "@bp.route('/extra/ping')\ndef ping():\n    return 'pong'\n",
            "site_app/app.py": (
                'app.config["PAGE_SIZE"] = 2',
                'app.config["PAGE_SIZE"] = 2\n\nfrom site_app.extra import bp\n\n'
                "app.register_blueprint(bp)",
            ),
        },
    ),
]
