"""Unchanged detection: digest of the applied version, and the first-sight proof."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import Kit

PLAIN = '''
"""A module the engine has never run."""
import os
from os import path as osp
from dataclasses import dataclass
LIMIT = 10
NAMES = ("a", "b")
def f(x: int, y: int = 2, *, z: str = "k") -> int:
    def inner():
        return x
    return x + y + LIMIT
async def g():
    return 1
class Base:
    """Base doc."""
    KIND = "base"
    def meth(self, a=1):
        return a
    @property
    def p(self):
        return 1
    @staticmethod
    def s():
        return 2
    @classmethod
    def c(cls):
        return cls
class Child(Base):
    pass
@dataclass
class Point:
    x: int
    y: int = 0
'''


def test_first_sight_identical_source_is_unchanged(kit: Kit) -> None:
    kit.write("m", PLAIN)
    m = kit.load("m")
    f, Base, child = m.f, m.Base, m.Child()
    kit.write("m", PLAIN)  # same text, newer mtime: nothing to do
    r = kit.reload_one("m")
    assert r.status == "unchanged", r
    assert m.f is f and m.Base is Base and type(child) is m.Child


def test_first_sight_each_kind_of_change_is_noticed(kit: Kit) -> None:
    changes = [
        ("LIMIT = 10", "LIMIT = 11"),
        ("return x + y + LIMIT", "return x + y - LIMIT"),
        ("y: int = 2", "y: int = 3"),
        ('z: str = "k"', 'z: str = "q"'),
        ("-> int:", "-> str:"),
        ("return x\n", "return -x\n"),
        ('KIND = "base"', 'KIND = "other"'),
        ("    @property\n    def p(self):\n        return 1\n", ""),
        ("class Child(Base):", "class Child:"),
        ("y: int = 0", "y: int = 1"),
        ('"""Base doc."""', '"""Other doc."""'),
        ('"""A module the engine has never run."""', ""),
        ("from os import path as osp", "from os import sep as osp"),
        ("import os\n", ""),
    ]
    for index, (old, new) in enumerate(changes):
        assert old in PLAIN, old
        name = f"m{index}"
        kit.write(name, PLAIN)
        kit.load(name)
        kit.write(name, PLAIN.replace(old, new, 1))
        r = kit.reload_one(name)
        assert r.status == "reloaded", (old, new, r)


def test_first_sight_runtime_state_is_not_proven_and_reloads(kit: Kit) -> None:
    # documented policy: without the engine's own digest, a mutated literal cannot be told
    # from an edited one, so the module is reloaded (and its state re-created)
    kit.write("m", "CACHE = {}\n")
    m = kit.load("m")
    m.CACHE["k"] = 1
    kit.write("m", "CACHE = {}\n")
    assert kit.reload_one("m").status == "reloaded"
    assert m.CACHE == {}


def test_first_sight_custom_decorators_are_not_proven(kit: Kit) -> None:
    src = "import functools\n@functools.lru_cache(maxsize=None)\ndef f(x):\n    return x\n"
    kit.write("m", src)
    kit.load("m")
    kit.write("m", src)
    assert kit.reload_one("m").status == "reloaded"
    kit.write("m", src)
    assert kit.reload_one("m").status == "unchanged"  # now the engine knows the digest


def test_bytecode_cache_of_the_imported_version_makes_first_reload_precise(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    kit.write("m", "OLD = 1\nCACHE = {}\ndef f():\n    return 1\n")
    m = kit.load("m")
    assert m.__cached__ and os.path.exists(m.__cached__)
    m.runtime = "set by someone else"
    m.CACHE["k"] = 1
    cache = m.CACHE
    kit.write("m", "OLD = 1\nCACHE = {}\ndef f():\n    return 1\n")  # touched, same code
    assert kit.reload_one("m").status == "unchanged"
    assert m.CACHE is cache
    kit.write("m", "CACHE = {}\ndef f():\n    return 2\n")
    kit.ok("m")
    assert not hasattr(m, "OLD")  # the old source bound it
    assert m.runtime == "set by someone else"  # the old source did not
    assert m.f() == 2


def test_bytecode_cache_is_read_only_while_the_engine_does_not_know_the_running_version(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the first reload and after a rollback to the imported version the engine
    reads the imported version's bytecode; after a reload it knows what runs, and a file read
    on every later reload would be wasted I/O."""
    from reloadctl.agent.engine import previous, resolve, rollback_modules

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    reads: list[str] = []

    def counting(module: object, source_bytes: bytes | None = None) -> object:
        reads.append(getattr(module, "__name__", "?"))
        return previous.imported_code(module, source_bytes)  # type: ignore[arg-type]

    monkeypatch.setattr(resolve, "imported_code", counting)
    kit.write("m", "OLD = 1\ndef f():\n    return 1\n")
    m = kit.load("m")
    kit.write("m", "def f():\n    return 2\n")
    kit.ok("m")
    assert len(reads) == 1 and not hasattr(m, "OLD")  # the first reload used it
    assert [r.status for r in rollback_modules([kit.name("m")])] == ["reloaded"]
    assert m.f() == 1  # the imported version runs again: the engine no longer knows it
    kit.write("m", "def f():\n    return 3\n")
    kit.ok("m")
    assert len(reads) == 2 and m.f() == 3 and not hasattr(m, "OLD")
    kit.write("m", "def f():\n    return 4\n")
    kit.ok("m")
    assert len(reads) == 2 and m.f() == 4  # it knows the running version now


def test_stale_bytecode_of_another_version_is_not_trusted(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    # v0 leaves a cache file; v1 is imported without writing one; v0 comes back on disk
    import importlib
    import sys as _sys

    v0 = "def f():\n    return 0\n"
    monkeypatch.setattr(_sys, "dont_write_bytecode", False)
    kit.write("m", v0)
    kit.load("m")
    del _sys.modules[kit.name("m")]
    monkeypatch.setattr(_sys, "dont_write_bytecode", True)
    kit.write("m", "def f():\n    return 1\n")
    importlib.invalidate_caches()
    m = kit.load("m")
    assert m.f() == 1
    kit.write("m", v0)
    r = kit.reload_one("m")
    assert r.status == "reloaded" and m.f() == 0
