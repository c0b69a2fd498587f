"""pydantic models and click/typer command groups edited live."""

from __future__ import annotations

import pytest
from conftest import Kit

pydantic = pytest.importorskip("pydantic")
click = pytest.importorskip("click")
typer = pytest.importorskip("typer")
from click.testing import CliRunner  # noqa: E402

MODEL = """
from pydantic import BaseModel

class Item(BaseModel):
    name: str
    price: int = 1

    def label(self):
        return f"{self.name}={self.price}"
"""


def test_method_edit_is_silent_and_field_changes_warn(kit: Kit) -> None:
    kit.write("models", MODEL)
    m = kit.load("models")
    held = m.Item(name="a")
    kit.write("models", MODEL.replace('f"{self.name}', 'f"item {self.name}'))
    assert not kit.ok("models").warnings
    assert held.label() == "item a=1"
    kit.write("models", MODEL.replace("price: int = 1", "price: int = 1\n    qty: int = 0"))
    result = kit.ok("models")
    (warning,) = result.warnings
    assert "Item: instances created before this reload lack field qty" in warning
    assert m.Item(name="b").qty == 0  # the class validates like after a restart
    assert m.Item.model_validate({"name": "c", "qty": "3"}).qty == 3
    with pytest.raises(AttributeError):
        _ = held.qty
    kit.write("models", MODEL.replace("price: int = 1", "price: str = '1'"))
    result = kit.ok("models")
    assert any("qty" in w and "still carry removed field" in w for w in result.warnings)
    assert any("price validated as the old type" in w for w in result.warnings)
    assert m.Item(name="d", price="x").price == "x"


CLI = """
import click

@click.group()
def cli():
    pass

@cli.command()
@click.option("--n", default=1)
def hello(n):
    click.echo(f"hello {n}")
"""


def test_held_group_keeps_its_commands_and_gains_new_ones(kit: Kit) -> None:
    kit.write("cli", CLI)
    m = kit.load("cli")
    held = m.cli
    extra = "from __P__cli import cli\n\n@cli.command()\ndef extra():\n    print('extra')\n"
    kit.write("more", extra)
    kit.load("more")
    runner = CliRunner()
    assert runner.invoke(held, ["hello"]).output == "hello 1\n"
    kit.write(
        "cli",
        CLI.replace("default=1", "default=2")
        + "\n@cli.command()\ndef bye():\n    click.echo('bye')\n",
    )
    result = kit.ok("cli")
    assert m.cli is held
    assert runner.invoke(held, ["hello"]).output == "hello 2\n"  # decorator args changed
    assert runner.invoke(held, ["bye"]).output == "bye\n"
    assert runner.invoke(held, ["extra"]).output == "extra\n"  # another module's command
    assert ("added", f"{m.__name__}.cli command bye") in {(a.kind, a.name) for a in result.actions}
    kit.write("cli", CLI)
    kit.ok("cli")
    assert runner.invoke(held, ["bye"]).exit_code == 2  # removed, as after a restart


TYPER = """
import typer
app = typer.Typer()

@app.command()
def hello(name: str = "ann"):
    print(f"hello {name}")

@app.command()
def other():
    print("other")
"""


def test_held_typer_app_gains_new_commands(kit: Kit) -> None:
    kit.write("tapp", TYPER)
    m = kit.load("tapp")
    held = m.app
    from typer.testing import CliRunner as TyperRunner

    runner = TyperRunner()
    assert runner.invoke(held, ["hello"]).output == "hello ann\n"
    bye = "\n@app.command()\ndef bye():\n    print('bye')\n"
    kit.write("tapp", TYPER.replace("hello {name}", "hi {name}") + bye)
    kit.ok("tapp")
    assert m.app is held
    assert runner.invoke(held, ["hello"]).output == "hi ann\n"
    assert runner.invoke(held, ["bye"]).output == "bye\n"


VALIDATED = """
from pydantic import BaseModel, field_validator

class Tag(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def clean(cls, value):
        return value.strip()

    def show(self):
        return self.name
"""


def test_changed_validator_warns_for_held_instances(kit: Kit) -> None:
    kit.write("tags", VALIDATED)
    m = kit.load("tags")
    held = m.Tag(name=" a ")
    kit.write("tags", VALIDATED.replace("return self.name", "return self.name * 2"))
    assert not kit.ok("tags").warnings  # a method: nothing held depends on it
    kit.write("tags", VALIDATED.replace("value.strip()", "value.strip().upper()"))
    (warning,) = kit.ok("tags").warnings
    assert "validated by the old version of clean" in warning
    assert m.Tag(name=" b ").name == "B" and held.name == "a"
