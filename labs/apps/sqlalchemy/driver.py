"""SQLAlchemy 2 app: declarative models, a session on a real SQLite file, held instances."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edits import Edit

MODULES = ("shop", "shop.models", "shop.services", "shop.reports")
QUICK = "model method body"


def start(root: Path) -> dict[str, Any]:
    from shop import models
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    path = root / f"shop-{os.getpid()}.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    models.Base.metadata.create_all(engine)
    session = Session(engine, expire_on_commit=False)
    ann = models.User(name="ann", orders=[models.Order(amount=100), models.Order(amount=50)])
    session.add(ann)
    session.commit()
    return {"session": session, "held": ann, "engine": engine}


def probe(state: dict[str, Any]) -> dict[str, Any]:
    from shop import models, services
    from sqlalchemy import select

    session, held = state["session"], state["held"]
    answers: dict[str, Any] = {"held.greet": held.greet(), "total": services.total(held)}
    answers["orders"] = [o.label() for o in held.orders]
    with type(session)(state["engine"]) as fresh:  # a new unit of work, as a request has
        users = fresh.scalars(select(models.User)).all()
        answers["queried"] = [u.greet() for u in users]
        answers["placed"] = services.place(fresh, fresh.get(models.User, held.id), 5)
        # leave the database as it was: every probe must see the same data
        newest = fresh.scalars(select(models.Order).order_by(models.Order.id.desc())).first()
        fresh.delete(newest)
        fresh.commit()
    report = getattr(services, "report", None)
    if report is not None:
        answers["report"] = report(held)
    return answers


def stop(state: dict[str, Any]) -> None:
    state["session"].close()
    state["engine"].dispose()


EDITS = [
    Edit(
        "model method body",
        "change a model method",
        {"shop/models.py": ('f"hello {self.name}"', 'f"hi {self.name.title()}"')},
    ),
    Edit(
        "service body",
        "edit a handler body",
        {"shop/services.py": ("raw - raw * DISCOUNT // 100", "raw - raw * DISCOUNT // 100 + 1")},
    ),
    Edit("constant", "change a constant", {"shop/services.py": ("DISCOUNT = 10", "DISCOUNT = 20")}),
    Edit(
        "rename helper",
        "rename a function",
        {"shop/services.py": ("def _fmt(value: int)", "def _money(value: int)")},
    ),
    Edit(
        "rename helper (callers too)",
        "rename a function",
        {"shop/services.py": ("_fmt(", "_money(")},
    ),
    Edit(
        "add column",
        "add a model field/column",
        {
            "shop/models.py": (
                "    name: Mapped[str] = mapped_column(String(50))\n",
                "    name: Mapped[str] = mapped_column(String(50))\n"
                "    age: Mapped[int] = mapped_column(default=0)\n",
            )
        },
    ),
    Edit(
        "column type",
        "change a decorator's/declaration's arguments",
        {"shop/models.py": ("String(50)", "String(80)")},
    ),
    Edit(
        "add mapped class",
        "add a model",
        {
            "shop/models.py": (
                "class Order(Base):",
                "class Tag(Base):\n    __tablename__ = 'tags'\n"
                "    id: Mapped[int] = mapped_column(primary_key=True)\n\n\n"
                "class Order(Base):",
            )
        },
    ),
    Edit(
        "add module",
        "add a module to a package",
        {
            "shop/reports.py": "def summary(user):\n    return f'{user.name}: {len(user.orders)} orders'\n",
            "shop/services.py": (
                "DISCOUNT = 10",
                "from shop.reports import summary\n\nDISCOUNT = 10\n\n\n"
                "def report(user):\n    return summary(user)",
            ),
        },
    ),
]
