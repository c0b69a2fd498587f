"""Mode 3's user-namespace rules (reloadctl.ipython.imports) with real modules and the real
engine: the reload is reloadctl's, the namespace a plain dict as in a shell."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reloadctl.agent import reload_modules
from reloadctl.ipython.imports import ImportFromTracker, Snapshot, track_imports


@pytest.fixture
def module(tmp_path: Path) -> Iterator[Callable[[str], tuple[str, Path]]]:
    sys.path.insert(0, str(tmp_path))
    names: list[str] = []

    def make(source: str) -> tuple[str, Path]:
        name = f"nsmod_{uuid.uuid4().hex[:12]}"
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        importlib.import_module(name)
        names.append(name)
        return name, path

    yield make
    sys.path.remove(str(tmp_path))
    for name in names:
        sys.modules.pop(name, None)


def run_cell(code: str, ns: dict[str, Any], tracker: ImportFromTracker) -> None:
    exec(code, ns)
    track_imports(code, tracker)


def reload_with(name: str, ns: dict[str, Any], tracker: ImportFromTracker) -> list[str]:
    snapshot = Snapshot(tracker)
    [result] = reload_modules([name], dependents=True)
    assert result.status == "reloaded", result
    return snapshot.apply(ns)


def test_names_the_user_reassigned_are_kept(module) -> None:
    name, path = module("A = 1\nB = 2\n")
    ns: dict[str, Any] = {}
    tracker = ImportFromTracker()
    run_cell(f"from {name} import A, B as bee", ns, tracker)
    ns["A"] = 100  # the user's own value now
    path.write_text("A = 10\nB = 20\n")
    assert reload_with(name, ns, tracker) == ["bee"]
    assert ns["A"] == 100 and ns["bee"] == 20


def test_a_new_star_name_does_not_overwrite_a_user_name(module) -> None:
    name, path = module("def f():\n    return 1\n")
    ns: dict[str, Any] = {"g": "mine"}
    tracker = ImportFromTracker()
    run_cell(f"from {name} import *", ns, tracker)
    path.write_text("def f():\n    return 1\n\ndef g():\n    return 2\n\ndef h():\n    return 3\n")
    assert reload_with(name, ns, tracker) == ["h"]
    assert ns["g"] == "mine" and ns["h"]() == 3


def test_star_import_honours_all(module) -> None:
    name, path = module("__all__ = ['a']\na = 1\n")
    ns: dict[str, Any] = {}
    tracker = ImportFromTracker()
    run_cell(f"from {name} import *", ns, tracker)
    path.write_text("__all__ = ['a', 'b']\na = 1\nb = 2\nc = 3\n")
    reload_with(name, ns, tracker)
    assert ns["b"] == 2 and "c" not in ns


def test_the_latest_import_of_a_name_wins_across_modules(module) -> None:
    first, first_path = module("X = 'first'\n")
    second, _ = module("X = 'second'\n")
    ns: dict[str, Any] = {}
    tracker = ImportFromTracker()
    run_cell(f"from {first} import X", ns, tracker)
    run_cell(f"from {second} import X", ns, tracker)
    assert first not in tracker.symbol_map or "X" not in tracker.symbol_map[first]
    first_path.write_text("X = 'first, edited'\n")
    assert reload_with(first, ns, tracker) == []
    assert ns["X"] == "second"


def test_relative_imports_and_unparsable_cells_are_not_tracked() -> None:
    tracker = ImportFromTracker()
    track_imports("from . import x\nfrom .m import y", tracker)
    track_imports("%time from os import path", tracker)
    track_imports("x = 1", tracker)
    assert tracker.symbol_map == {} and tracker.imports_froms == {}
