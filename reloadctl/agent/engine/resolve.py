"""Which modules may be reloaded, and finding each one's current spec and source.

Refusal rules, checked in this order (the first that applies gives the reason):
1. outside the ``allow`` patterns (fnmatch, case-sensitive);
2. not in ``sys.modules`` -> ``not_loaded`` (never imported by the engine);
3. a ``sys.modules`` entry that is not a module; ``__main__``/``__mp_main__``; reloadctl's
   own modules; no ``__spec__`` and none found by name (a module object that replaced its
   own entry has none, and is reloaded from the source the import system finds, like
   ``importlib.reload`` does); a module registered under another name (an alias);
4. builtin, frozen, extension (any loader without Python source), namespace package.
A module whose source file vanished is a failure (``FileNotFoundError``), not a refusal:
the module could be reloaded, the file it needs is gone.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.machinery
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import ModuleType

from reloadctl.agent.engine import history
from reloadctl.agent.engine.previous import imported_code
from reloadctl.agent.engine.source import ModuleCode, Source, analyse, compile_module, read_source
from reloadctl.results import FAILED, NOT_LOADED, REFUSED, ErrorInfo, ModuleResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

_MAIN_NAMES: Final = frozenset({"__main__", "__mp_main__"})
_OWN_PACKAGE: Final = "reloadctl"
#: Loaders whose spec origin is a file of its own (not a path inside an archive).
_FILE_LOADERS: Final = (
    importlib.machinery.SourceFileLoader,
    importlib.machinery.SourcelessFileLoader,
    importlib.machinery.ExtensionFileLoader,
)


@dataclass(frozen=True, slots=True)
class Target:
    """A loaded module, its freshly found spec, source and compiled code, ready to apply."""

    name: str
    module: ModuleType
    spec: ModuleSpec
    source: Source
    code: ModuleCode
    #: The code the module was imported with, when its bytecode cache still holds it.
    imported: ModuleCode | None = None
    #: What the compiler warned about in the new source (reported, never shown).
    compile_warnings: tuple[str, ...] = ()


def failure(name: str, exc: BaseException, *, duration_ms: float = 0.0) -> ModuleResult:
    """A ``failed`` result carrying the exception's type name, message and traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    # str(exc), not format_exception_only: the type is its own field, and a SyntaxError's
    # str() already names file and line ("invalid syntax (m.py, line 2)")
    message = str(exc) or type(exc).__name__
    return ModuleResult(
        name, FAILED, ErrorInfo(type(exc).__name__, message, text), duration_ms=duration_ms
    )


def refusal(name: str, reason: str) -> ModuleResult:
    """A ``refused`` result with ``reason``."""
    return ModuleResult(name, REFUSED, ErrorInfo("Refused", reason))


def not_loaded(name: str) -> ModuleResult:
    """The ``not_loaded`` result: this process has not imported ``name``."""
    return ModuleResult(
        name, NOT_LOADED, ErrorInfo("NotLoaded", f"module {name} is not loaded in this process")
    )


def allowed(name: str, allow: Sequence[str] | None) -> bool:
    """Rule 1: True when ``allow`` is None or ``name`` matches one of its patterns."""
    return allow is None or any(fnmatch.fnmatchcase(name, pattern) for pattern in allow)


def loaded_module(name: str, allow: Sequence[str] | None) -> ModuleType | ModuleResult:
    """Rules 1-4: the module to reload, or the result that says why not."""
    if not allowed(name, allow):
        return refusal(
            name, f"module {name} is outside the agent's allow list ({', '.join(allow or ())})"
        )
    module: object = sys.modules.get(name)
    if module is None:
        return not_loaded(name)
    if not isinstance(module, ModuleType):
        return refusal(
            name, f"sys.modules[{name!r}] is a {type(module).__name__} object, not a module"
        )
    if name in _MAIN_NAMES:
        return refusal(name, f"{name} is the program's main script and cannot be reloaded")
    if name == _OWN_PACKAGE or name.startswith(_OWN_PACKAGE + "."):
        return refusal(name, f"{name} is part of reloadctl, which never reloads itself")
    spec = getattr(module, "__spec__", None)
    if spec is None:
        # a module object that took its own sys.modules entry (lazy modules, modules as
        # class instances) has no spec; like importlib.reload, find the source by name
        spec = find_spec(name, module)
    if spec is None:
        return refusal(
            name, f"module {name} has no __spec__ and the import system finds no source for it"
        )
    if getattr(spec, "name", name) != name:
        return refusal(name, f"sys.modules[{name!r}] is module {spec.name}; reload that name")
    reason = _kind_refusal(name, spec)
    if reason:
        return refusal(name, reason)
    return module


def _kind_refusal(name: str, spec: Any) -> str:
    """Rule 4 for a spec (the module's own, or the freshly found one)."""
    loader = getattr(spec, "loader", None)
    origin = getattr(spec, "origin", None)
    if origin == "built-in" or loader is importlib.machinery.BuiltinImporter:
        return f"{name} is a built-in module (compiled into the interpreter)"
    if origin == "frozen" or loader is importlib.machinery.FrozenImporter:
        return f"{name} is a frozen module (compiled into the interpreter)"
    if isinstance(loader, importlib.machinery.ExtensionFileLoader) or (
        isinstance(origin, str) and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    ):
        return f"{name} is an extension module ({origin}); native code cannot be reloaded"
    if getattr(spec, "submodule_search_locations", None) is not None and (
        origin in (None, "namespace") or not getattr(spec, "has_location", True)
    ):
        return f"{name} is a namespace package (it has no source of its own)"
    if loader is None or not callable(getattr(loader, "get_source", None)):
        return f"{name} has no Python source its loader can provide ({type(loader).__name__})"
    return ""


def find_spec(name: str, module: ModuleType) -> ModuleSpec | None:
    """Find ``name``'s spec again through ``sys.meta_path`` (a module may have become a
    package, or moved), like ``importlib.reload`` does; None when nothing provides it."""
    parent_name = name.rpartition(".")[0]
    path = None
    if parent_name:
        parent = sys.modules.get(parent_name)
        path = getattr(parent, "__path__", None)
        if path is None:
            return None
    for _attempt in range(2):
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec: ModuleSpec | None = find(name, path, module)
            if spec is not None:
                break
        else:
            spec = None
        origin = getattr(spec, "origin", None)
        on_disk = isinstance(getattr(spec, "loader", None), _FILE_LOADERS)
        if spec is not None and (not on_disk or (origin and os.path.exists(origin))):
            return spec  # (a zipimport origin is a path inside the archive: not checked)
        # a directory listing cached within the same mtime tick can be stale: look again
        importlib.invalidate_caches()
    return None


def prepare(name: str, allow: Sequence[str] | None) -> Target | ModuleResult:
    """Resolve, re-find, read and compile ``name`` without changing anything.

    Never raises: anything unexpected (a hostile module object, a broken finder) is a
    ``failed`` result carrying that exception.
    """
    try:
        return _prepare(name, allow)
    except Exception as exc:  # noqa: BLE001 - the engine reports, it never raises per module
        return failure(name, exc)


def _prepare(name: str, allow: Sequence[str] | None) -> Target | ModuleResult:
    found = loaded_module(name, allow)
    if isinstance(found, ModuleResult):
        return found
    module = found
    old_origin = getattr(module.__spec__, "origin", None)
    try:
        spec = find_spec(name, module)
    except Exception as exc:  # noqa: BLE001 - third-party finders may raise anything
        return failure(name, exc)
    if spec is None:
        missing = FileNotFoundError(
            f"the source of {name} ({old_origin}) is gone; nothing was executed"
        )
        return failure(name, missing)
    reason = _kind_refusal(name, spec)
    if reason:
        return refusal(name, reason)
    try:
        source = read_source(spec.loader, name)
    except Exception as exc:  # noqa: BLE001 - OSError, UnicodeDecodeError, a loader's own
        return failure(name, exc)
    if source is None:
        return refusal(name, f"{name} has no Python source (loaded from {spec.origin})")
    filename = spec.origin if isinstance(spec.origin, str) else f"<{name}>"
    try:
        code, compile_warnings = compile_module(source.text, filename)
    except Exception as exc:  # noqa: BLE001 - SyntaxError, ValueError (NUL), RecursionError
        return failure(name, exc)
    package = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
    imported = None
    if not history.knows_running_version(name, module):
        # the imported version's bytecode matters only until the engine has applied (and
        # so knows) a version itself; reading it on every later reload would be wasted I/O
        old = imported_code(module, source.text.encode("utf-8", "surrogateescape"))
        imported = analyse(old, package) if old is not None else None
    return Target(name, module, spec, source, analyse(code, package), imported, compile_warnings)
