"""attrs- and dataclass-heavy domain code with instances held from before the edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edits import Edit

MODULES = ("ledger", "ledger.model")
QUICK = "method body"


def start(root: Path) -> dict[str, Any]:
    from ledger.model import Account, Money, Rate

    return {"money": Money(5), "account": Account("ann", [10, 20]), "rate": Rate(10)}


def _try(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:
        return type(exc).__name__


def probe(state: dict[str, Any]) -> dict[str, Any]:
    from ledger.model import Account, Money, Rate

    money, account, rate = state["money"], state["account"], state["rate"]
    return {
        "held money": _try(lambda: str(money.plus(Money(1)))),
        "held money repr": _try(lambda: repr(money)),
        "held eq": _try(lambda: money == Money(5)),
        "held isinstance": isinstance(money, Money),
        "held account": _try(account.balance),
        "held account repr": _try(lambda: repr(account)),
        "held rate": _try(lambda: rate.apply(200)),
        "new account": _try(lambda: repr(Account("bob"))),
        "new money": _try(lambda: str(Money(7, "USD"))),
        "new rate": _try(lambda: Rate(5).apply(100)),
    }


EDITS = [
    Edit(
        "method body",
        "change a method",
        {
            "ledger/model.py": (
                'f"{self.amount} {self.currency}"',
                'f"{self.currency} {self.amount}"',
            )
        },
    ),
    Edit("constant", "change a constant", {"ledger/model.py": ("FEE = 2", "FEE = 1")}),
    Edit(
        "dataclass field added",
        "add a field",
        {
            "ledger/model.py": (
                "    entries: list[int] = field(default_factory=list)\n",
                '    entries: list[int] = field(default_factory=list)\n    note: str = ""\n',
            )
        },
    ),
    Edit(
        "attrs field added",
        "add a field",
        {
            "ledger/model.py": (
                '    currency: str = "EUR"\n',
                '    currency: str = "EUR"\n    memo: str = ""\n',
            )
        },
    ),
    Edit(
        "attrs default changed",
        "change a decorator's arguments",
        {"ledger/model.py": ('currency: str = "EUR"', 'currency: str = "USD"')},
    ),
    Edit(
        "frozen -> mutable",
        "change a decorator's arguments",
        {"ledger/model.py": ("@attrs.frozen", "@attrs.define")},
    ),
    Edit(
        "rename method",
        "rename a function",
        {"ledger/model.py": ("def apply(self, value: int)", "def applied(self, value: int)")},
    ),
]
