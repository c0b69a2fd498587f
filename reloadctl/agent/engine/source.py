"""Reading a module's source fresh from its loader, hashing it, and compiling it."""

from __future__ import annotations

import contextlib
import dis
import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import CodeType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

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
    #: The body may bind names the bytecode does not show (``exec``, ``globals()``, ...).
    dynamic: bool = False
    #: Absolute names of the modules it does ``from x import *`` of; None when one of them
    #: cannot be named statically or the body also binds names through ``exec`` & co.
    star_from: frozenset[str] | None = None
    #: The part of ``imports`` the body itself imports (not inside functions): what must
    #: have run before it.
    body_imports: frozenset[str] = frozenset()


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


def compile_module(text: str, filename: str) -> tuple[CodeType, tuple[str, ...]]:
    """Compile a module body with only its own ``__future__`` flags (never the engine's).

    Returns the code and the warnings the compiler gave (``SyntaxWarning: invalid escape
    sequence``...) as text for the report: they are never shown through the host's
    ``warnings`` (that would print on its stderr, or raise under ``-W error``).
    """
    with silenced_warnings() as caught:
        code = compile(text, filename, "exec", flags=0, dont_inherit=True)
    seen: dict[str, None] = {}
    for item in caught:
        seen.setdefault(f"{filename}:{item.lineno}: {item.category.__name__}: {item.message}")
    return code, tuple(seen)


@contextlib.contextmanager
def silenced_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record the warnings raised inside the block instead of showing them.

    ``catch_warnings`` swaps process-wide state: a warning another thread raises during
    the block (a compile takes milliseconds) is recorded here instead of shown. That is
    the lesser evil next to printing the agent's warnings on the host's stderr.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


_OP_STORE: Final = frozenset(
    dis.opmap[name] for name in ("STORE_NAME", "STORE_GLOBAL", "DELETE_NAME")
)
_OP_LOAD_CONST: Final = dis.opmap["LOAD_CONST"]
_OP_IMPORT_NAME: Final = dis.opmap["IMPORT_NAME"]
_OP_IMPORT_STAR: Final = dis.opmap.get("IMPORT_STAR", -1)  # before 3.12
_OP_INTRINSIC_1: Final = dis.opmap.get("CALL_INTRINSIC_1", -1)  # 3.12+
_INTRINSIC_IMPORT_STAR: Final = 2
_CO_OPTIMIZED: Final = 0x1  # set on function code, not on module or class bodies
#: Names through which module-level code can bind globals the bytecode does not show.
_DYNAMIC_NAMES: Final = frozenset(
    {"exec", "eval", "globals", "locals", "vars", "setattr", "__dict__"}
)
_OP_EXTENDED_ARG: Final = dis.opmap["EXTENDED_ARG"]


def _scan(code: CodeType) -> tuple[set[str], list[tuple[str, Any, Any]], bool]:
    """One pass over ``code``'s own bytecode (not nested code): the names it stores, its
    imports as ``(name, level, fromlist)``, and whether it does ``import *``.

    A hand-rolled loop rather than ``dis.get_instructions``: this runs on every reload and
    ``dis`` builds an object per instruction (it was most of a reload's cost).
    """
    raw = code.co_code
    names = code.co_names
    consts = code.co_consts
    stores: set[str] = set()
    imports: list[tuple[str, Any, Any]] = []
    star = False
    last: list[Any] = [0, None]
    extended = 0
    for offset in range(0, len(raw), 2):
        op = raw[offset]
        arg = raw[offset + 1] | extended
        if op == _OP_EXTENDED_ARG:
            extended = arg << 8
            continue
        extended = 0
        if op in _OP_STORE:
            stores.add(names[arg])
        elif op == _OP_LOAD_CONST:
            last = [last[1], consts[arg]]
        elif op == _OP_IMPORT_NAME:
            imports.append((names[arg], last[0], last[1]))
        elif op == _OP_IMPORT_STAR or (op == _OP_INTRINSIC_1 and arg == _INTRINSIC_IMPORT_STAR):
            star = True
    return stores, imports, star


def analyse(code: CodeType, package: str) -> ModuleCode:
    """Statically analyse a compiled module body (see ``ModuleCode``)."""
    stores, found, star = _scan(code)
    if _TYPE_CHECKING in code.co_names:
        stores -= _type_checking_only(code)
    imports: set[str] = set()
    star_from: set[str] | None = set()
    for name, level, fromlist in found:
        imported = _imported(name, level, fromlist, package)
        imports.update(imported)
        if isinstance(fromlist, tuple) and "*" in fromlist and star_from is not None:
            # ``_imported`` puts the module itself first; a star from-list adds nothing else
            star_from = star_from | imported if len(imported) == 1 else None
    body_imports = frozenset(imports)
    for const in code.co_consts:
        # imports inside functions/classes also count as dependencies
        if isinstance(const, CodeType):
            imports.update(_nested_imports(const, package))
    exec_like = not _DYNAMIC_NAMES.isdisjoint(code.co_names)
    dynamic = star or exec_like
    stars = None if exec_like or star_from is None else frozenset(star_from)
    return ModuleCode(
        code, frozenset(stores), star, frozenset(imports), dynamic, stars, body_imports
    )


_TYPE_CHECKING: Final = "TYPE_CHECKING"
_STORE_NAMES: Final = frozenset({"STORE_NAME", "STORE_GLOBAL", "DELETE_NAME"})


def _type_checking_only(code: CodeType) -> set[str]:
    """Names the body binds only inside ``if TYPE_CHECKING:`` blocks, which never run: a
    fresh import does not have them, so they do not count as bound (and are pruned).

    ``dis`` is affordable here: only bodies that mention ``TYPE_CHECKING`` get this pass.
    """
    instructions = list(dis.get_instructions(code))
    skipped: list[tuple[int, int]] = []
    for index, ins in enumerate(instructions):
        if ins.argval != _TYPE_CHECKING or not ins.opname.startswith("LOAD_"):
            continue
        for follow in instructions[index + 1 : index + 3]:
            if follow.opname == "TO_BOOL":
                continue
            forward = isinstance(follow.argval, int) and follow.argval > follow.offset
            if "JUMP" in follow.opname and "IF_FALSE" in follow.opname and forward:
                skipped.append((follow.offset, follow.argval))
            break
    inside: set[str] = set()
    outside: set[str] = set()
    for ins in instructions:
        if ins.opname in _STORE_NAMES and isinstance(ins.argval, str):
            hidden = any(start < ins.offset < end for start, end in skipped)
            (inside if hidden else outside).add(ins.argval)
    return inside - outside


def _nested_imports(code: CodeType, package: str) -> set[str]:
    found: set[str] = set()
    if _OP_IMPORT_NAME in code.co_code[::2]:
        for name, level, fromlist in _scan(code)[1]:
            found.update(_imported(name, level, fromlist, package))
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


def class_stores(code: CodeType, prefix: str = "") -> dict[str, frozenset[str]]:
    """Map each class defined in a module body (qualname, nested classes too) to the names
    its class body binds, from the compiled module ``code``."""
    found: dict[str, frozenset[str]] = {}
    for const in code.co_consts:
        if not isinstance(const, CodeType) or const.co_name.startswith("<"):
            continue
        if const.co_flags & _CO_OPTIMIZED:
            continue  # a function: classes defined inside it are not the module's
        qualname = prefix + const.co_name
        found.setdefault(qualname, frozenset(_scan(const)[0]))
        found.update(class_stores(const, qualname + "."))
    return found


def definition_qualnames(code: CodeType, prefix: str = "") -> set[str]:
    """Qualnames of the functions and classes a module body defines with ``def``/``class``
    (classes descended into, functions not)."""
    found: set[str] = set()
    for const in code.co_consts:
        if not isinstance(const, CodeType) or const.co_name.startswith("<"):
            continue
        qualname = prefix + const.co_name
        found.add(qualname)
        if not const.co_flags & _CO_OPTIMIZED:
            found.update(definition_qualnames(const, qualname + "."))
    return found
