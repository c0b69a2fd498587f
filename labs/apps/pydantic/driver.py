"""pydantic v2 models with instances held from before the edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edits import Edit

MODULES = ("catalog", "catalog.models")
QUICK = "add field"


def start(root: Path) -> dict[str, Any]:
    from catalog.models import Basket, Item

    held = Item(name=" pen ", price=3)
    return {"held": held, "basket": Basket(items=[held, Item(name="ink", price=5)])}


def _try(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # the error is the answer
        return f"{type(exc).__name__}"


def probe(state: dict[str, Any]) -> dict[str, Any]:
    from catalog.models import Basket, Item

    held, basket = state["held"], state["basket"]
    return {
        "held.label": _try(held.label),
        "held.dump": _try(held.model_dump),
        "basket.total": _try(basket.total),
        "new.label": _try(lambda: Item(name=" cup ", price=2).label()),
        "validate": _try(lambda: Item.model_validate({"name": "x", "price": "7"}).model_dump()),
        "negative": _try(lambda: Item(name="y", price=-1).price),
        "basket.validate": _try(
            lambda: Basket.model_validate({"items": [{"name": "a", "price": 1}]}).total()
        ),
        "schema": sorted(Item.model_json_schema()["properties"]),
    }


EDITS = [
    Edit(
        "method body",
        "change a model method",
        {
            "catalog/models.py": (
                'f"{self.name}: {self.price} {CURRENCY}"',
                'f"{self.name} costs {self.price} {CURRENCY}"',
            )
        },
    ),
    Edit(
        "constant",
        "change a constant",
        {"catalog/models.py": ('CURRENCY = "EUR"', 'CURRENCY = "USD"')},
    ),
    Edit(
        "add field",
        "add a model field",
        {
            "catalog/models.py": (
                "    price: int = Field(ge=0)\n",
                "    price: int = Field(ge=0)\n    qty: int = 1\n",
            )
        },
    ),
    Edit(
        "add field used by a method",
        "add a model field",
        {
            "catalog/models.py": [
                (
                    "    price: int = Field(ge=0)\n",
                    "    price: int = Field(ge=0)\n    qty: int = 1\n",
                ),
                ("{self.price} {CURRENCY}", "{self.price} {CURRENCY} x{self.qty}"),
            ]
        },
    ),
    Edit(
        "field constraint",
        "change a decorator's arguments",
        {"catalog/models.py": ("Field(ge=0)", "Field(ge=-5)")},
    ),
    Edit(
        "validator body",
        "edit a handler body",
        {"catalog/models.py": ("return value.strip()", "return value.strip().upper()")},
    ),
    Edit(
        "rename method",
        "rename a function",
        {"catalog/models.py": ("def total(self)", "def sum_prices(self)")},
    ),
]
