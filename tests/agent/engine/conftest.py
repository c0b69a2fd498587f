"""Fixtures for the engine tests: real module files in a temp dir on sys.path, unique names."""

from __future__ import annotations

import importlib
import itertools
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from reloadctl.agent.engine import reload_modules
from reloadctl.results import ModuleResult

_counter = itertools.count()


class Kit:
    """Writes modules (``__P__`` in names and sources becomes this test's unique prefix),
    imports and reloads them, and undoes every trace in ``sys.modules``/``sys.path``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"rlt{os.getpid()}_{next(_counter)}_"
        self._tick = 0

    def name(self, dotted: str) -> str:
        """The real module name of ``dotted`` (``"m"`` -> ``"rlt123_4_m"``)."""
        return self.prefix + dotted

    def write(self, dotted: str, source: str | None, *, package: bool = False) -> Path:
        """Write (or, with None, delete) module ``dotted``; bump its mtime forward."""
        parts = self.name(dotted).split(".")
        path = self.root.joinpath(*parts)
        path = path / "__init__.py" if package else path.with_suffix(".py")
        if source is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source).replace("__P__", self.prefix))
            self._tick += 5
            st = path.stat()
            os.utime(path, (st.st_atime + self._tick, st.st_mtime + self._tick))
        importlib.invalidate_caches()
        return path

    def load(self, dotted: str) -> ModuleType:
        """Import ``dotted`` (under its unique name)."""
        return importlib.import_module(self.name(dotted))

    def reload(self, *dotted: str, **options: object) -> list[ModuleResult]:
        """``reload_modules`` of the given modules (unique names), with ``options``."""
        return reload_modules([self.name(d) for d in dotted], **options)  # type: ignore[arg-type]

    def reload_one(self, dotted: str, **options: object) -> ModuleResult:
        """Reload one module and return its result."""
        (result,) = self.reload(dotted, **options)
        return result

    def ok(self, dotted: str, **options: object) -> ModuleResult:
        """Reload one module and assert it was reloaded."""
        result = self.reload_one(dotted, **options)
        assert result.status == "reloaded", result
        return result

    def cleanup(self) -> None:
        for key in [k for k in sys.modules if k.startswith(self.prefix)]:
            del sys.modules[key]
        importlib.invalidate_caches()


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kit]:
    """A module workshop (see ``Kit``); bytecode is never written, like the reloadlab."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    k = Kit(tmp_path)
    try:
        yield k
    finally:
        k.cleanup()


def actions(result: ModuleResult, kind: str) -> list[str]:
    """Names of ``result``'s actions of ``kind``."""
    return [a.name for a in result.actions if a.kind == kind]
