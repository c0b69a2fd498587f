"""What the engine refuses, reports as not loaded, or rejects as a programmer error."""

from __future__ import annotations

import math
import sys
import types

import pytest
from conftest import Kit

from reloadctl.agent.engine import reload_modules, rollback_modules


def _refused(name: str, **options: object) -> str:
    (r,) = reload_modules([name], **options)  # type: ignore[arg-type]
    assert r.status == "refused", r
    assert r.error is not None and r.error.type == "Refused"
    return r.error.message


def test_not_loaded_is_never_imported() -> None:
    name = "json.tool_not_imported_rl"
    (r,) = reload_modules([name])
    assert r.status == "not_loaded" and name not in sys.modules
    assert r.error is not None and r.error.type == "NotLoaded"


def test_module_removed_from_sys_modules_is_not_loaded(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    mm = kit.load("m")
    del sys.modules[kit.name("m")]
    kit.write("m", "X = 2\n")
    assert kit.reload_one("m").status == "not_loaded"
    assert kit.name("m") not in sys.modules and mm.X == 1


def test_builtin_refused_and_untouched() -> None:
    sys.rl_marker = 1  # type: ignore[attr-defined]
    try:
        assert "built-in" in _refused("sys")
        assert sys.rl_marker == 1  # type: ignore[attr-defined]
    finally:
        del sys.rl_marker  # type: ignore[attr-defined]


def test_extension_refused() -> None:
    if not math.__spec__.origin or not math.__spec__.origin.endswith(".so"):
        pytest.skip("math is not an extension module in this build")
    sq = math.sqrt
    assert "extension module" in _refused("math")
    assert math.sqrt is sq


@pytest.mark.skipif(sys.version_info < (3, 11), reason="os is frozen from 3.11")
def test_frozen_refused() -> None:
    import os

    if getattr(os.__spec__, "origin", None) != "frozen":
        pytest.skip("os is not frozen in this interpreter")
    assert "frozen" in _refused("os")


@pytest.mark.parametrize("name", ["__main__", "__mp_main__"])
def test_main_refused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    assert "main" in _refused(name)


def test_module_without_spec_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("fake_mod_rl")
    monkeypatch.setitem(sys.modules, "fake_mod_rl", fake)
    assert "__spec__" in _refused("fake_mod_rl")
    assert sys.modules["fake_mod_rl"] is fake


def test_non_module_entry_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "not_a_module_rl", object())
    assert "not a module" in _refused("not_a_module_rl")


def test_own_modules_refused() -> None:
    assert "reloadctl" in _refused("reloadctl.agent.engine")
    assert "reloadctl" in _refused("reloadctl")


def test_namespace_package_refused(kit: Kit) -> None:
    (kit.root / kit.name("ns")).mkdir()
    kit.write("ns.inner", "X = 1\n")
    kit.load("ns.inner")
    assert "namespace package" in _refused(kit.name("ns"))
    kit.write("ns.inner", "X = 2\n")
    assert kit.reload_one("ns.inner").status == "reloaded"


def test_alias_entry_refused(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    monkeypatch.setitem(sys.modules, kit.name("alias"), m)
    assert "reload that name" in _refused(kit.name("alias"))


def test_sourceless_module_refused(kit: Kit) -> None:
    import importlib.machinery
    import importlib.util
    import py_compile

    src = kit.write("m", "X = 1\n")
    pyc = src.with_suffix(".pyc")
    py_compile.compile(str(src), cfile=str(pyc))
    src.unlink()
    loader = importlib.machinery.SourcelessFileLoader(kit.name("m"), str(pyc))
    spec = importlib.util.spec_from_loader(kit.name("m"), loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[kit.name("m")] = module
    loader.exec_module(module)
    message = _refused(kit.name("m"))
    assert "source" in message


def test_allow_list(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    kit.write("other", "X = 1\n")
    m, other = kit.load("m"), kit.load("other")
    kit.write("m", "X = 2\n")
    kit.write("other", "X = 2\n")
    results = reload_modules([kit.name("m"), kit.name("other")], allow=[kit.prefix + "m*"])
    assert [r.status for r in results] == ["reloaded", "refused"]
    assert results[1].error is not None
    assert "outside the agent's allow list" in results[1].error.message
    assert (m.X, other.X) == (2, 1)
    assert "outside the agent's allow list" in _refused("json", allow=[])
    (r,) = rollback_modules([kit.name("m")], allow=["nothing.*"])
    assert r.status == "refused"


def test_programmer_errors_raise() -> None:
    with pytest.raises(TypeError):
        reload_modules([1])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        reload_modules("json")
    with pytest.raises(TypeError):
        reload_modules(["json"], allow=[None])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        rollback_modules([b"json"])  # type: ignore[list-item]


def test_hostile_module_object_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    class Hostile(types.ModuleType):
        @property
        def __spec__(self):  # type: ignore[override]
            raise RuntimeError("no spec for you")

    monkeypatch.setitem(sys.modules, "hostile_rl", Hostile("hostile_rl"))
    (r,) = reload_modules(["hostile_rl"])
    assert r.status == "failed" and r.error is not None and r.error.type == "RuntimeError"
    (r,) = reload_modules(["hostile_rl"], dry_run=True)
    assert r.status == "failed"


def test_module_imported_from_a_zip_archive(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import importlib
    import zipfile

    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped_mod_rl.py", "def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(archive))
    monkeypatch.delitem(sys.modules, "zipped_mod_rl", raising=False)
    importlib.invalidate_caches()
    mod = importlib.import_module("zipped_mod_rl")
    try:
        (r,) = reload_modules(["zipped_mod_rl"])
        assert r.status in {"unchanged", "reloaded"}, r
        assert mod.f() == 1
    finally:
        sys.modules.pop("zipped_mod_rl", None)
