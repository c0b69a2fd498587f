"""Reading a module's source fresh from its loader, hashing it, and compiling it."""

from __future__ import annotations

import dis
import hashlib
from dataclasses import dataclass
from types import CodeType
from typing import Any, Final

#: Opcodes by which module-level code binds a name in the module namespace.
_STORE_OPS: Final = frozenset({"STORE_NAME", "STORE_GLOBAL"})
#: Nested code objects that are not user-visible functions (their closures never escape).
_COMPREHENSIONS: Final = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})


@dataclass(frozen=True, slots=True)
class Source:
    """The text of a module as it is on disk now, and its digest."""

    text: str
    digest: str


@dataclass(frozen=True, slots=True)
class ModuleCode:
    """What static analysis of a compiled module body says.

    ``stores`` are the names the top-level code binds; ``star_import`` is True when it does
    ``from x import *`` (so it may bind names ``stores`` cannot list); ``imports`` are the
    absolute module names it may import (for dependency order); ``has_doc`` tells whether the
    body sets ``__doc__``.
    """

    code: CodeType
    stores: frozenset[str]
    star_import: bool
    imports: frozenset[str]


def digest_text(text: str) -> str:
    """Return the digest by which the engine recognises a version of a source text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def read_source(loader: Any, name: str) -> Source | None:
    """Read ``name``'s source through ``loader`` (always the file, never a cached .pyc).

    Returns None when the loader has no source for it (sourceless or extension loaders).
    Raises OSError (or the loader's ImportError) when the source cannot be read.
    """
    get_source = getattr(loader, "get_source", None)
    if get_source is None:
        return None
    text = get_source(name)
    if text is None:
        return None
    return Source(text, digest_text(text))


def compile_module(text: str, filename: str) -> CodeType:
    """Compile a module body with only its own ``__future__`` flags (never the engine's)."""
    return compile(text, filename, "exec", flags=0, dont_inherit=True)


def analyse(code: CodeType, package: str) -> ModuleCode:
    """Statically analyse a compiled module body (see ``ModuleCode``)."""
    stores: set[str] = set()
    imports: set[str] = set()
    star = False
    level: int = 0
    fromlist: Any = None
    for ins in dis.get_instructions(code):
        op = ins.opname
        if op in _STORE_OPS or op == "DELETE_NAME":
            stores.add(str(ins.argval))
        elif op == "LOAD_CONST":
            # IMPORT_NAME is preceded by LOAD_CONST level, LOAD_CONST fromlist.
            level, fromlist = fromlist, ins.argval
        elif op == "IMPORT_NAME":
            imports.update(_imported(str(ins.argval), level, fromlist, package))
        elif op == "IMPORT_STAR" or (
            op == "CALL_INTRINSIC_1" and ins.argrepr == "INTRINSIC_IMPORT_STAR"
        ):
            star = True
    for const in code.co_consts:
        # imports inside functions/classes also count as dependencies
        if isinstance(const, CodeType):
            imports.update(_nested_imports(const, package))
    return ModuleCode(code, frozenset(stores), star, frozenset(imports))


def _nested_imports(code: CodeType, package: str) -> set[str]:
    found: set[str] = set()
    level: Any = 0
    fromlist: Any = None
    for ins in dis.get_instructions(code):
        if ins.opname == "LOAD_CONST":
            level, fromlist = fromlist, ins.argval
        elif ins.opname == "IMPORT_NAME":
            found.update(_imported(str(ins.argval), level, fromlist, package))
    for const in code.co_consts:
        if isinstance(const, CodeType):
            found.update(_nested_imports(const, package))
    return found


def _imported(name: str, level: Any, fromlist: Any, package: str) -> set[str]:
    """The absolute module names an ``IMPORT_NAME`` may load (the module and its from-list)."""
    if isinstance(level, int) and level > 0:
        parts = package.split(".") if package else []
        if level - 1 > len(parts):
            return set()
        base = ".".join(parts[: len(parts) - (level - 1)])
        full = f"{base}.{name}" if name and base else (name or base)
    else:
        full = name
    if not full:
        return set()
    found = {full}
    if isinstance(fromlist, tuple):
        found.update(f"{full}.{item}" for item in fromlist if isinstance(item, str) and item != "*")
    return found


def function_codes(code: CodeType, prefix: str = "") -> dict[str, CodeType]:
    """Map a path (``outer/inner#0``) to each nested function code object inside ``code``.

    Comprehensions are skipped (their frames never outlive the call); lambdas and nested
    ``def``s are included, recursively. The path is stable between two compilations of the
    same source structure, so old and new nested code can be paired by it.
    """
    found: dict[str, CodeType] = {}
    seen: dict[str, int] = {}
    for const in code.co_consts:
        if not isinstance(const, CodeType) or const.co_name in _COMPREHENSIONS:
            continue
        index = seen.get(const.co_name, 0)
        seen[const.co_name] = index + 1
        path = f"{prefix}{const.co_name}#{index}"
        found[path] = const
        found.update(function_codes(const, path + "/"))
    return found
