"""FastAPI/Starlette apps and routers edited live: the app the server holds (here a
TestClient's) serves the new routes."""

from __future__ import annotations

import pytest
from conftest import Kit

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

APP = """
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="shop")

class Item(BaseModel):
    name: str
    price: int = 1

@app.get("/items/{name}")
def get_item(name: str) -> Item:
    return Item(name=name)
"""


def test_recreated_app_serves_new_and_edited_routes(kit: Kit) -> None:
    kit.write("api", APP)
    m = kit.load("api")
    held = m.app
    with TestClient(held) as client:
        assert client.get("/items/a").json() == {"name": "a", "price": 1}
        kit.write(
            "api",
            APP.replace("Item(name=name)", "Item(name=name.upper(), price=2)")
            + '\n@app.post("/items")\ndef add(item: Item) -> Item:\n    return item\n',
        )
        result = kit.ok("api")
        assert m.app is held
        assert client.get("/items/a").json() == {"name": "A", "price": 2}
        assert client.post("/items", json={"name": "b"}).json() == {"name": "b", "price": 1}
        assert "/items" in client.get("/openapi.json").json()["paths"]
        assert any(a.kind == "added" and "/items [POST]" in a.name for a in result.actions)


ROUTER = """
from fastapi import APIRouter
router = APIRouter(prefix="/r")

@router.get("/one")
def one():
    return 1
"""


def test_recreated_router_included_in_the_app(kit: Kit) -> None:
    kit.write("routes", ROUTER)
    kit.write(
        "main",
        "from fastapi import FastAPI\nfrom __P__routes import router\n"
        "app = FastAPI()\napp.include_router(router)\n",
    )
    routes = kit.load("routes")
    main = kit.load("main")
    with TestClient(main.app) as client:
        assert client.get("/r/one").json() == 1
        two = '\n@router.get("/two")\ndef two():\n    return 2\n'
        kit.write("routes", ROUTER.replace("return 1", "return 11") + two)
        kit.ok("routes")
        assert client.get("/r/one").json() == 11
        assert client.get("/r/two").json() == 2, "a new route of an included router"
        assert routes.router is not None


def test_views_module_on_a_held_app_does_not_duplicate(kit: Kit) -> None:
    kit.write("core", "from fastapi import FastAPI\napp = FastAPI()\n")
    views = "from __P__core import app\n\n@app.get('/v/{x}')\ndef v(x: int):\n    return x\n"
    kit.write("views", views)
    core = kit.load("core")
    kit.load("views")
    with TestClient(core.app) as client:
        assert client.get("/v/3").json() == 3
        kit.write("views", views.replace("x: int", "x: str").replace("return x", "return x * 2"))
        kit.ok("views")
        assert client.get("/v/3").json() == "33"
        assert len([r for r in core.app.routes if getattr(r, "path", "") == "/v/{x}"]) == 1
