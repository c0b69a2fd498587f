"""SQLAlchemy 2 declarative models edited live: mapper, table and instances held from before
keep working; a changed mapping is refused with the reason and nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Kit

sa = pytest.importorskip("sqlalchemy")
from sqlalchemy.orm import Session  # noqa: E402

MODELS = """
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    notes: Mapped[list["Note"]] = relationship(back_populates="user")

    def greet(self):
        return "hi " + self.name

class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    user: Mapped[User] = relationship(back_populates="notes")
"""


def _db(models: object, path: Path) -> tuple[object, Session]:
    engine = sa.create_engine(f"sqlite:///{path}")
    models.Base.metadata.create_all(engine)  # type: ignore[attr-defined]
    session = Session(engine)
    user = models.User(name="ann", notes=[models.Note(text="first")])  # type: ignore[attr-defined]
    session.add(user)
    session.commit()
    return user, session


def test_method_edit_keeps_mapper_and_held_instances(kit: Kit, tmp_path: Path) -> None:
    kit.write("models", MODELS)
    models = kit.load("models")
    user, session = _db(models, tmp_path / "db.sqlite")
    mapper, table = models.User.__mapper__, models.User.__table__
    kit.write("models", MODELS.replace('"hi "', '"hello "'))
    result = kit.ok("models")
    assert not result.warnings
    assert models.User.__mapper__ is mapper and models.User.__table__ is table
    assert models.Base.metadata.tables["users"] is table
    assert user.greet() == "hello ann"  # the instance held from before: issue 14's crash
    session.expunge_all()
    loaded = session.scalars(sa.select(models.User)).one()
    assert loaded.greet() == "hello ann" and loaded.notes[0].text == "first"
    session.add(models.User(name="bob"))
    session.commit()
    assert session.scalar(sa.select(sa.func.count()).select_from(models.User)) == 2
    assert ("kept", kit.name("models.User")) in {(a.kind, a.name) for a in result.actions}
    assert not any(a.name.endswith(".__mapper__") for a in result.actions)
    session.close()


def test_column_added_is_refused_and_nothing_changes(kit: Kit, tmp_path: Path) -> None:
    kit.write("models", MODELS)
    models = kit.load("models")
    user, session = _db(models, tmp_path / "db.sqlite")
    greet = models.User.greet
    kit.write(
        "models",
        MODELS.replace('"hi "', '"hello "').replace(
            "    def greet", "    qty: Mapped[int] = mapped_column(default=0)\n\n    def greet"
        ),
    )
    result = kit.reload_one("models")
    assert result.status == "refused", result
    assert result.error is not None and "column users.qty added" in result.error.message
    assert "restart" in result.error.message
    assert models.User.greet is greet and user.greet() == "hi ann"
    assert "qty" not in models.User.__table__.columns
    session.expunge_all()
    assert session.scalars(sa.select(models.User)).one().greet() == "hi ann"
    # the refusal left the registry usable: the original edit still applies afterwards
    kit.write("models", MODELS.replace('"hi "', '"hello "'))
    kit.ok("models")
    assert user.greet() == "hello ann"
    session.close()


def test_column_type_and_relationship_changes_are_refused(kit: Kit) -> None:
    kit.write("models", MODELS)
    models = kit.load("models")
    kit.write("models", MODELS.replace("String(50)", "String(80)"))
    result = kit.reload_one("models")
    assert result.status == "refused" and "column users.name changed" in str(result.error)
    joined = 'back_populates="user", lazy="joined"'
    kit.write("models", MODELS.replace('back_populates="user"', joined))
    result = kit.reload_one("models")
    assert result.status == "refused" and "users.notes changed" in str(result.error)
    assert models.User.__mapper__.local_table is models.User.__table__


BASE = """
from sqlalchemy.orm import DeclarativeBase

class Base(DeclarativeBase):
    pass
"""

ITEMS = """
from sqlalchemy.orm import Mapped, mapped_column
from __P__base import Base

class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    price: Mapped[int] = mapped_column(default=1)

    def total(self, n):
        return self.price * n
"""


def test_base_in_another_module_method_edit_and_new_class(kit: Kit, tmp_path: Path) -> None:
    """The registry outlives the reload: the class is declared again without 'Table already
    defined', and a class added by the edit is mapped in the live registry."""
    kit.write("base", BASE)
    kit.write("items", ITEMS)
    base, items = kit.load("base"), kit.load("items")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    base.Base.metadata.create_all(engine)
    with Session(engine) as session:
        held = items.Item(price=3)
        session.add(held)
        session.commit()
        added = ITEMS.replace("self.price * n", "self.price * n + 1") + (
            "\nclass Tag(Base):\n    __tablename__ = 'tags'\n"
            "    id: Mapped[int] = mapped_column(primary_key=True)\n"
        )
        kit.write("items", added)
        result = kit.ok("items")
        assert held.total(2) == 7
        assert base.Base.registry._class_registry["Item"] is items.Item
        assert base.Base.metadata.tables["items"] is items.Item.__table__
        assert "tags" in base.Base.metadata.tables
        base.Base.metadata.create_all(engine)
        session.add(items.Tag())
        session.commit()
        assert session.scalars(sa.select(items.Item)).one().total(1) == 4
        assert not result.warnings
        sa.orm.configure_mappers()


def test_body_failure_after_models_restores_registry(kit: Kit) -> None:
    kit.write("base", BASE)
    kit.write("items", ITEMS)
    base, items = kit.load("base"), kit.load("items")
    kit.write("items", ITEMS + "\nraise RuntimeError('boom')\n")
    result = kit.reload_one("items")
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "RuntimeError"
    assert base.Base.registry._class_registry["Item"] is items.Item
    assert base.Base.metadata.tables["items"] is items.Item.__table__
    assert [m.class_ for m in base.Base.registry._managers] == [items.Item]
    kit.write("items", ITEMS.replace("self.price * n", "self.price * n * 10"))
    kit.ok("items")
    assert items.Item(price=1).total(1) == 10


def test_class_added_under_a_recreated_base_is_refused(kit: Kit) -> None:
    kit.write("models", MODELS)
    models = kit.load("models")
    kit.write(
        "models",
        MODELS + "\nclass Tag(Base):\n    __tablename__ = 'tags'\n"
        "    id: Mapped[int] = mapped_column(primary_key=True)\n",
    )
    result = kit.reload_one("models")
    assert result.status == "refused"
    assert "Tag is new" in str(result.error) and "restart" in str(result.error)
    assert not hasattr(models, "Tag")


def test_removed_class_is_warned(kit: Kit) -> None:
    kit.write("base", BASE)
    old = "\nclass Old(Base):\n    __tablename__ = 'old'\n"
    kit.write("items", ITEMS + old + "    id: Mapped[int] = mapped_column(primary_key=True)\n")
    kit.load("base")
    kit.load("items")
    kit.write("items", ITEMS)
    result = kit.ok("items")
    assert any("Old was removed from the source" in w for w in result.warnings)
