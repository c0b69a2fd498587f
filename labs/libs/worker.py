"""One measurement in a fresh interpreter: import release 1 of a library from a source tree,
overwrite the tree with release 2, upgrade the live process with one method (reloadctl's
engine, importlib.reload in sorted or dependency order, IPython's superreload, jurigged),
probe the references held from before, then run release 2's own test suite in-process.

``python worker.py SPEC.json`` writes its result as JSON to the path the spec names. The
``ceiling`` method runs the suite in a fresh release-2 process, with no upgrade at all.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import os
import shutil
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

SKIP_DIRS = {"tests", "test", "testing", "__pycache__"}


# -- the library's modules ----------------------------------------------------------------


def module_names(root: Path, packages: list[str]) -> list[str]:
    """Every module of ``packages`` under ``root`` (test packages and ``__main__`` left out)."""
    names: list[str] = []
    for top in packages:
        single = root / f"{top}.py"
        if single.is_file():
            names.append(top)
            continue
        base = root / top
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if any(p in SKIP_DIRS for p in parts[:-1]) or parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return sorted(set(names))


def tracked_files(root: Path, packages: list[str]) -> dict[str, Path]:
    """The library's files under ``root``, keyed by path relative to ``root``."""
    found: dict[str, Path] = {}
    for top in packages:
        single = root / f"{top}.py"
        if single.is_file():
            found[single.name] = single
        base = root / top
        if base.is_dir():
            for path in base.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    found[str(path.relative_to(root))] = path
    return found


def overwrite(live: Path, new: Path, packages: list[str]) -> dict[str, int]:
    """Make the library's files under ``live`` those of ``new`` (edited, added, removed),
    with mtimes moved forward so no bytecode cache of release 1 can pass for release 2."""
    old_files, new_files = tracked_files(live, packages), tracked_files(new, packages)
    stats = {"edited": 0, "added": 0, "removed": 0}
    for rel, path in old_files.items():
        if rel not in new_files:
            path.unlink()
            stats["removed"] += 1
    later = time.time() + 10
    for rel, src in new_files.items():
        dst = live / rel
        if rel in old_files:
            if dst.read_bytes() == src.read_bytes():
                continue
            stats["edited"] += 1
        else:
            stats["added"] += 1
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        os.utime(dst, (later, later))
    importlib.invalidate_caches()
    return stats


def import_all(names: list[str]) -> dict[str, str]:
    """Import every module; return the ones that failed (optional dependencies missing)."""
    failed: dict[str, str] = {}
    for name in names:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                importlib.import_module(name)
        except BaseException as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"[:200]
    return failed


# -- held references ----------------------------------------------------------------------


def code_map(root: Path, names: list[str]) -> dict[tuple[str, str], tuple[types.CodeType, ...]]:
    """``(module, qualname) -> codes`` of every function and method the sources define
    (several for one qualname: a property's getter and setter, overloads)."""
    found: dict[tuple[str, str], tuple[types.CodeType, ...]] = {}
    for name in names:
        path = _source_path(root, name)
        if path is None:
            continue
        try:
            code = compile(path.read_text("utf-8"), str(path), "exec", dont_inherit=True)
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue
        _walk_code(code, "", name, found)
    return found


def _walk_code(code: types.CodeType, prefix: str, module: str, out: dict[Any, Any]) -> None:
    for const in code.co_consts:
        if not isinstance(const, types.CodeType) or const.co_name.startswith("<"):
            continue
        qualname = prefix + const.co_name
        if const.co_flags & 0x1:
            out[(module, qualname)] = (*out.get((module, qualname), ()), const)
        else:
            _walk_code(const, qualname + ".", module, out)


def _source_path(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _function_of(obj: Any) -> types.FunctionType | None:
    with contextlib.suppress(Exception):
        obj = inspect.unwrap(obj)
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    return obj if isinstance(obj, types.FunctionType) else None


class Probes:
    """References a user holds before the upgrade; ``check`` says which run release 2's code.

    Picked automatically: module-level functions whose code changed (held as ``from P.x
    import f`` would hold them), instances of classes that gained or changed methods (made
    with ``__new__``) and a bound method of each, and the package module itself.
    """

    def __init__(self, names: list[str], old: dict[Any, Any], new: dict[Any, Any]) -> None:
        self.items: list[tuple[str, str, Any, Any]] = []
        changed = {key for key, code in new.items() if old.get(key) != code}
        functions = 0
        classes = 0
        for name in names:
            module = sys.modules.get(name)
            if module is None:
                continue
            for key, value in sorted(vars(module).items()):
                # only functions, classes and wrappers: asking any other object for an
                # attribute may run its __getattr__ and change the library's state
                plain = isinstance(value, (types.FunctionType, type))
                wrapped = (
                    "__wrapped__" in (getattr(type(value), "__dict__", {}) or {})
                    or (
                        type(getattr(value, "__dict__", None)) is dict
                        and "__wrapped__" in value.__dict__
                    )
                    if not plain and not hasattr(type(value), "__getattr__")
                    else False
                )
                if not (plain or wrapped) or getattr(value, "__module__", None) != name:
                    continue
                fn = _function_of(value)
                if fn is not None and functions < 6 and (name, fn.__qualname__) in changed:
                    if fn.__qualname__ == key:
                        self.items.append(("function", f"{name}.{key}", value, (name, key)))
                        functions += 1
                elif isinstance(value, type) and classes < 4 and value.__qualname__ == key:
                    methods = sorted(
                        q.rpartition(".")[2]
                        for (m, q) in changed
                        if m == name and q.startswith(key + ".") and q.count(".") == 1
                    )
                    if not methods:
                        continue
                    try:
                        inst = value.__new__(value)
                    except Exception:
                        continue
                    self.items.append(("instance", f"{name}.{key}", inst, (name, key, methods)))
                    old_meth = next((m for m in methods if (name, f"{key}.{m}") in old), None)
                    if old_meth is not None:
                        with contextlib.suppress(Exception):
                            bound = getattr(inst, old_meth)
                            if isinstance(bound, types.MethodType):
                                label = f"{name}.{key}.{old_meth}"
                                self.items.append(("bound", label, bound, (name, key, old_meth)))
                    classes += 1
        top = names[0].partition(".")[0] if names else ""
        if top in sys.modules:
            self.items.append(("package", top, sys.modules[top], (top,)))

    def check(self, new: dict[Any, Any], new_root: Path) -> tuple[int, int, list[str]]:
        """``(ok, total, failures)``: each held reference runs release 2's code."""
        ok = 0
        failures: list[str] = []
        for kind, label, held, key in self.items:
            why = ""
            try:
                good = getattr(self, "_" + kind)(held, key, new, new_root)
            except Exception as exc:
                good, why = False, f" ({type(exc).__name__})"
            ok += bool(good)
            if not good:
                failures.append(f"{kind} {label}{why}")
        return ok, len(self.items), failures

    def _function(self, held: Any, key: Any, new: Any, _root: Path) -> bool:
        module, name = key
        expected = new.get((module, name))
        fn = _function_of(held)
        return expected is not None and fn is not None and fn.__code__ in expected

    def _instance(self, held: Any, key: Any, new: Any, _root: Path) -> bool:
        module, name, methods = key
        live = getattr(sys.modules.get(module), name, None)
        if not isinstance(live, type) or not isinstance(held, live):
            return False
        for method in methods:
            fn = _function_of(inspect.getattr_static(type(held), method, None))
            if fn is None or fn.__code__ not in new[(module, f"{name}.{method}")]:
                return False
        return True

    def _bound(self, held: Any, key: Any, new: Any, _root: Path) -> bool:
        module, name, method = key
        expected = new.get((module, f"{name}.{method}"))
        fn = _function_of(held.__func__)
        return expected is not None and fn is not None and fn.__code__ in expected

    def _package(self, held: Any, key: Any, _new: Any, root: Path) -> bool:
        (top,) = key
        if sys.modules.get(top) is not held:
            return False
        init = _source_path(root, top)
        exported = _static_all(init) if init is not None else None
        return all(hasattr(held, name) for name in exported or ())


def _static_all(path: Path) -> list[str] | None:
    """The names of ``__all__`` that the module body binds at top level (an ``__all__``
    may list a name the module never defines: a fresh import lacks it too)."""
    try:
        tree = ast.parse(path.read_text("utf-8"))
    except (SyntaxError, ValueError):
        return None
    exported: list[str] | None = None
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            bound |= names
            if "__all__" in names:
                with contextlib.suppress(ValueError):
                    exported = [str(v) for v in ast.literal_eval(node.value)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).partition(".")[0] for a in node.names}
    return None if exported is None else [n for n in exported if n in bound]


# -- upgrade methods ------------------------------------------------------------------------


def dependency_order(root: Path, names: list[str]) -> list[str]:
    """Modules after the modules they import (static, from the new sources), packages after
    their submodules; cycles broken alphabetically."""
    deps: dict[str, set[str]] = {}
    for name in names:
        path = _source_path(root, name)
        wanted: set[str] = {n for n in names if n.startswith(name + ".")}
        if path is not None:
            with contextlib.suppress(SyntaxError, ValueError, UnicodeDecodeError):
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                    for target in _imported(node, package):
                        if target in names and target != name and not name.startswith(target + "."):
                            wanted.add(target)
        deps[name] = wanted
    placed: list[str] = []
    remaining = sorted(names)
    while remaining:
        pick = next((n for n in remaining if deps[n] <= set(placed)), remaining[0])
        remaining.remove(pick)
        placed.append(pick)
    return placed


def _imported(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            full = f"{base}.{node.module}" if node.module else base
        else:
            full = node.module or ""
        return [full] + [f"{full}.{alias.name}" for alias in node.names]
    return []


def upgrade(method: str, names: list[str], root: Path) -> tuple[float, dict[str, Any]]:
    """Apply ``method`` to ``names``; return the time it took (ms) and what it reported."""
    report: dict[str, Any] = {}
    start = time.perf_counter()
    if method == "reloadctl":
        from reloadctl.agent.engine import reload_modules

        results = reload_modules(names)
        elapsed = (time.perf_counter() - start) * 1000
        report["statuses"] = _count(r.status for r in results)
        report["errors"] = [
            f"{r.module}: {r.error.type}: {r.error.message}"[:300]
            for r in results
            if r.error and r.status in ("failed", "refused")
        ][:10]
        report["warnings"] = [w[:300] for r in results for w in r.warnings][:20]
        return elapsed, report
    if method == "jurigged":
        return _jurigged(names, report, start)
    order = dependency_order(root, names) if method == "importlib-deps" else names
    reload: Any = importlib.reload
    if method == "superreload":
        from IPython.extensions.autoreload import superreload

        reload = superreload
    errors: list[str] = []
    for name in order:
        module = sys.modules.get(name)
        if module is None:
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                reload(module)
        except BaseException as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
    report["errors"] = errors[:10]
    report["statuses"] = {"failed": len(errors)}
    return (time.perf_counter() - start) * 1000, report


JURIGGED: dict[str, Any] = {}


def _jurigged_setup(root: Path) -> None:
    """jurigged must see modules being imported to know their code: register first."""
    from jurigged import registry

    registry.auto_register(filter=lambda filename: filename.startswith(str(root)))
    JURIGGED["registry"] = registry


def _jurigged(names: list[str], report: dict[str, Any], start: float) -> tuple[float, Any]:
    registry = JURIGGED["registry"]
    errors: list[str] = []
    for name in names:
        module = sys.modules.get(name)
        filename = getattr(module, "__file__", None)
        if not filename:
            continue
        try:
            codefile = registry.get(filename)
            if codefile is not None:
                codefile.refresh()
        except BaseException as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
    report["errors"] = errors[:10]
    report["statuses"] = {"failed": len(errors)}
    return (time.perf_counter() - start) * 1000, report


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


# -- the test suite -------------------------------------------------------------------------


class Counter:
    """A pytest plugin counting outcomes and naming the tests that did not pass."""

    def __init__(self) -> None:
        self.counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call":
            outcome = "skipped" if report.skipped else report.outcome
            self.counts[outcome] += 1
            if report.failed:
                self.failed.append(report.nodeid)
        elif report.failed:
            self.counts["errors"] += 1
            self.failed.append(f"{report.nodeid} [{report.when}]")
        elif report.when == "setup" and report.skipped:
            self.counts["skipped"] += 1

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.counts["errors"] += 1
            self.failed.append(f"{report.nodeid} [collect]")


def run_tests(tree: Path, tests: list[str], extra: list[str]) -> dict[str, Any]:
    import pytest

    counter = Counter()
    args = [*tests, "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-o", "addopts="]
    args += ["-W", "ignore::DeprecationWarning", "--continue-on-collection-errors", *extra]
    if importlib.util.find_spec("pytest_timeout") is not None:
        # a test that a broken upgrade sends into a loop fails instead of hanging the run
        args += ["--timeout=30", "--timeout-method=signal"]
    os.chdir(tree)
    sink = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(sink):
        code = pytest.main(args, plugins=[counter])
    return {
        "exit": int(code),
        "seconds": round(time.perf_counter() - start, 2),
        **counter.counts,
        "not_passed": sorted(counter.failed)[:400],
    }


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    method = spec["method"]
    tree, live, new_root = Path(spec["tree"]), Path(spec["live"]), Path(spec["new"])
    packages: list[str] = spec["packages"]
    result: dict[str, Any] = {"method": method}
    sys.path.insert(0, str(live))
    try:
        if method == "ceiling":
            result["import_failed"] = import_all(module_names(live, packages))
        else:
            if method == "jurigged":
                _jurigged_setup(live)
            old_names = module_names(live, packages)
            result["import_failed"] = import_all(old_names)
            old_codes = code_map(live, old_names)
            new_names = module_names(new_root, packages)
            new_codes = code_map(new_root, new_names)
            probes = Probes(old_names, old_codes, new_codes)
            result["files"] = overwrite(live, new_root, packages)
            names = sorted(set(old_names) | set(new_names))
            result["reload_ms"], result["report"] = upgrade(method, names, live)
            ok, total, failures = probes.check(new_codes, new_root)
            result["probes"] = {"ok": ok, "total": total, "failures": failures}
        result["tests"] = run_tests(tree, spec["tests"], spec.get("pytest_args", []))
    except BaseException as exc:
        result["crash"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[
            -3000:
        ]
    Path(spec["out"]).write_text(json.dumps(result, indent=1))
    sys.stdout.flush()
    os._exit(0)  # a suite may leave threads behind: do not wait for them


if __name__ == "__main__":
    main(sys.argv[1])
