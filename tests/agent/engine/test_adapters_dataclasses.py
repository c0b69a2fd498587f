"""dataclasses and attrs classes edited live: held instances keep their values, and field
changes that make them differ from a restart are told."""

from __future__ import annotations

import pytest
from conftest import Kit

attrs = pytest.importorskip("attrs")

DOMAIN = """
import dataclasses
import attrs

@dataclasses.dataclass
class Point:
    x: int
    y: int = 0

    def norm(self):
        return abs(self.x) + abs(self.y)

@attrs.define(slots=False)
class Label:
    text: str
    color: str = "red"

    def show(self):
        return f"{self.text}/{self.color}"
"""


def test_method_edit_is_silent(kit: Kit) -> None:
    kit.write("domain", DOMAIN)
    m = kit.load("domain")
    p, label = m.Point(3, -4), m.Label("a")
    edited = DOMAIN.replace("abs(self.x) + abs(self.y)", "max(abs(self.x), abs(self.y))")
    kit.write("domain", edited)
    assert not kit.ok("domain").warnings
    assert p.norm() == 4 and label.show() == "a/red" and isinstance(p, m.Point)


def test_field_changes_warn(kit: Kit) -> None:
    kit.write("domain", DOMAIN)
    m = kit.load("domain")
    label = m.Label("a")
    kit.write(
        "domain",
        DOMAIN.replace('color: str = "red"', 'color: str = "blue"\n    size: int = 1').replace(
            "    y: int = 0\n", "    y: int = 0\n    z: int = 0\n"
        ),
    )
    warnings = kit.ok("domain").warnings
    (said,) = [w for w in warnings if "Label" in w]
    assert "lack field size" in said and "old default of color" in said
    assert not [w for w in warnings if "Point" in w]  # z = 0 is a class attribute: held work
    assert m.Label("b").show() == "b/blue" and label.color == "red"
    with pytest.raises(AttributeError):
        _ = label.size
