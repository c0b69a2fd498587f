"""FastAPI service served for real by uvicorn on 127.0.0.1 (the server holds the app)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edits import Edit

MODULES = ("api", "api.schemas", "api.items", "api.main", "api.extra")
QUICK = "add route"
REQUESTS = [
    ("GET", "/", None),
    ("GET", "/items/pen", None),
    ("POST", "/items/", {"name": "ink", "price": 2}),
    ("POST", "/items/", {"name": "ink"}),
    ("GET", "/health", None),
    ("GET", "/items/pen/stock", None),
    ("GET", "/extra/ping", None),
]


def start(root: Path) -> dict[str, Any]:
    import uvicorn
    from api.main import app

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-lab", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return {"server": server, "thread": thread, "port": port}


def _call(port: int, method: str, path: str, body: Any) -> list[Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return [resp.status, json.loads(resp.read())]
    except urllib.error.HTTPError as err:
        return [err.code, None]


def probe(state: dict[str, Any]) -> dict[str, Any]:
    answers = {f"{m} {p} {b}": _call(state["port"], m, p, b) for m, p, b in REQUESTS}
    spec = _call(state["port"], "GET", "/openapi.json", None)[1]
    answers["openapi paths"] = sorted(spec["paths"]) if spec else None
    answers["openapi Item"] = (
        sorted(spec["components"]["schemas"]["Item"]["properties"]) if spec else None
    )
    return answers


def stop(state: dict[str, Any]) -> None:
    state["server"].should_exit = True
    state["thread"].join(timeout=5)


EDITS = [
    Edit(
        "handler body",
        "edit a handler body",
        {"api/items.py": ("price=STOCK.get(name, 0)", "price=STOCK.get(name, 0) * 10")},
    ),
    Edit(
        "add route",
        "add a route",
        {
            "api/main.py": (
                '@app.get("/")',
                '@app.get("/health")\ndef health():\n    return "ok"\n\n\n@app.get("/")',
            )
        },
    ),
    Edit(
        "add route to router",
        "add a route",
        {
            "api/items.py": (
                '@router.post("/")',
                '@router.get("/{name}/stock")\ndef stock(name: str) -> int:\n'
                '    return STOCK.get(name, 0)\n\n\n@router.post("/")',
            )
        },
    ),
    Edit(
        "constant",
        "change a constant",
        {"api/items.py": ('STOCK = {"pen": 3}', 'STOCK = {"pen": 4}')},
    ),
    Edit(
        "schema field default",
        "change a model field",
        {"api/schemas.py": ("price: int = 1", "price: int = 5")},
    ),
    Edit(
        "schema field added",
        "add a model field",
        {"api/schemas.py": ("price: int = 1", "price: int = 1\n    qty: int = 0")},
    ),
    Edit(
        "route path",
        "change a decorator's arguments",
        {"api/main.py": ('@app.get("/")', '@app.get("/health")')},
    ),
    Edit(
        "rename handler", "rename a function", {"api/items.py": ("def get_item(", "def read_item(")}
    ),
    Edit("app metadata", "change a constant", {"api/main.py": ('"version": 1', '"version": 2')}),
    Edit(
        "add module (router)",
        "add a module to a package",
        {
            "api/extra.py": "from fastapi import APIRouter\n\nrouter = APIRouter()\n\n\n"
            "@router.get('/extra/ping')\ndef ping():\n    return 'pong'\n",
            "api/main.py": [
                (
                    "from api.items import router",
                    "from api import extra\nfrom api.items import router",
                ),
                (
                    "app.include_router(router)",
                    "app.include_router(router)\napp.include_router(extra.router)",
                ),
            ],
        },
    ),
]
