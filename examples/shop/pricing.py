"""Prices of the sample shop: the module the demo edits and reloads while the shop runs."""

from __future__ import annotations

from typing import Final

VERSION: Final = "v1"

PRICES: Final = {"apple": 1.20, "pear": 0.90}


def quote(item: str) -> str:
    """Return the price line for ``item``, e.g. ``"apple 1.20 EUR"``."""
    price = PRICES.get(item)
    if price is None:
        return f"{item} not sold here"
    return f"{item} {price:.2f} EUR"


def describe() -> str:
    """One line that shows which version of this module is running."""
    items = ", ".join(quote(item) for item in sorted(PRICES))
    return f"pricing {VERSION}: {items}"
