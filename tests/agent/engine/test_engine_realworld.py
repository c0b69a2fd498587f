"""Real code, not toy modules: copies of stdlib modules and packages (enums, dataclasses,

# ruff: noqa: E501 - long assertion messages read best on one line
decorators, properties, caches, relative imports) reloaded in place and still working."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sysconfig
from pathlib import Path

import pytest
from conftest import Kit

from reloadctl.agent.engine import reload_modules

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CASES = ["textwrap", "fractions", "argparse", "ipaddress", "http", "json", "calendar", "typing"]


def _copy(kit: Kit, name: str) -> Path:
    if (STDLIB / name).is_dir():
        target = kit.root / kit.name(name)
        shutil.copytree(
            STDLIB / name, target, ignore=shutil.ignore_patterns("__pycache__", "test", "tests")
        )
        return target / "__init__.py"
    target = kit.root / (kit.name(name) + ".py")
    shutil.copy(STDLIB / (name + ".py"), target)
    return target


def _touch(path: Path, extra: str) -> None:
    with path.open("a") as fh:
        fh.write(extra)
    st = path.stat()
    os.utime(path, (st.st_atime + 5, st.st_mtime + 5))
    importlib.invalidate_caches()


@pytest.mark.parametrize("name", CASES)
def test_stdlib_module_reloads_in_place_and_keeps_working(kit: Kit, name: str) -> None:
    main = _copy(kit, name)
    importlib.invalidate_caches()
    mod = kit.load(name)
    before = {k: v for k, v in vars(mod).items() if isinstance(v, type)}
    _touch(main, "\n_RL_TOUCHED = 1\n")
    r = kit.reload_one(name)
    assert r.status == "reloaded", r
    assert not r.warnings, r.warnings
    for key, cls in before.items():
        assert vars(mod)[key] is cls, key  # every class kept its identity
    assert kit.reload_one(name).status == "unchanged"


def test_reloaded_stdlib_copies_still_work(kit: Kit) -> None:
    paths = {n: _copy(kit, n) for n in ("textwrap", "fractions", "http", "json", "argparse")}
    importlib.invalidate_caches()
    mods = {n: kit.load(n) for n in paths}
    half = mods["fractions"].Fraction(1, 2)
    status = mods["http"].HTTPStatus.NOT_FOUND
    for path in paths.values():
        _touch(path, "\n_RL_TOUCHED = 2\n")
    results = kit.reload(*paths)
    assert {r.status for r in results} == {"reloaded"}
    fractions, http, json = mods["fractions"], mods["http"], mods["json"]
    assert half + half == 1 and isinstance(half, fractions.Fraction)
    assert http.HTTPStatus(404) is status and status.phrase == "Not Found"
    assert json.loads(json.dumps({"a": [1, 2]})) == {"a": [1, 2]}
    assert mods["textwrap"].wrap("a b c", 2) == ["a", "b", "c"]
    parser = mods["argparse"].ArgumentParser()
    parser.add_argument("--x", type=int)
    assert parser.parse_args(["--x", "3"]).x == 3


@pytest.mark.parametrize("package", ["email", "json", "concurrent", "unittest"])
def test_whole_stdlib_package_upgrade_as_one_batch(kit: Kit, package: str) -> None:
    import pkgutil
    import sys

    main = _copy(kit, package)
    importlib.invalidate_caches()
    root = kit.load(package)
    for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    names = sorted(
        k for k in sys.modules if k == root.__name__ or k.startswith(root.__name__ + ".")
    )
    assert len(names) > 2
    for name in names:
        _touch(Path(sys.modules[name].__file__ or main), "\n_RL_TOUCHED = 3\n")
    results = reload_modules(list(reversed(names)))
    assert {r.status for r in results} == {"reloaded"}, [
        r for r in results if r.status != "reloaded"
    ][:2]
    assert not [w for r in results for w in r.warnings]
    assert {r.status for r in reload_modules(names)} == {"unchanged"}


_THIRD_PARTY_SCRIPT = r"""
import importlib, os, pkgutil, shutil, sys
sys.dont_write_bytecode = True
name, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
shutil.copytree(src, os.path.join(dst, name), ignore=shutil.ignore_patterns("__pycache__", "*.so"))
sys.path.insert(0, dst)
root = importlib.import_module(name)
assert root.__file__.startswith(dst), root.__file__
for info in pkgutil.walk_packages(root.__path__, name + "."):
    if not info.name.endswith("__main__"):
        try:
            importlib.import_module(info.name)
        except ImportError:
            pass  # optional dependencies of the package
names = sorted(k for k in sys.modules if (k == name or k.startswith(name + "."))
               and str(getattr(sys.modules[k], "__file__", "")).endswith(".py"))
for k in names:
    path = sys.modules[k].__file__
    with open(path, "a") as fh:
        fh.write("\n_RL_TOUCHED = 1\n")
    st = os.stat(path)
    os.utime(path, (st.st_atime + 5, st.st_mtime + 5))
from reloadctl.agent.engine import reload_modules
results = reload_modules(list(reversed(names)))
bad = [r for r in results if r.status != "reloaded" or r.warnings]
assert not bad, bad[:2]
assert {r.status for r in reload_modules(names)} == {"unchanged"}
print(len(names))
"""


@pytest.mark.parametrize("package", ["rpyc", "msgpack"])
def test_installed_package_reloads_as_one_batch(tmp_path: Path, package: str) -> None:
    import subprocess
    import sys

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed as a package")
    source = next(iter(spec.submodule_search_locations))
    proc = subprocess.run(
        [sys.executable, "-c", _THIRD_PARTY_SCRIPT, package, source, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip()) > 2
