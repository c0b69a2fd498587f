"""The code a module was imported with, recovered from its bytecode cache when possible.

The engine never sees the import that first ran a module, so on a module's first reload it
does not know which names the old source bound. When the module was imported from source
and a ``__pycache__`` file exists that was compiled from a *different* version of the source
than the one on disk now (its recorded mtime/size or hash differs), that file is the
version the process imported (nothing else rewrites it while the module stays imported,
short of another process importing the edited file). Its top-level stores then tell
exactly which names the old source bound. To rule out a cache file left over from some
other, older version (a process that imported without writing bytecode), the file is used
only when its functions are the very code objects running now (at least one compared, none
different). Anything doubtful returns None.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
from types import CodeType, FunctionType, ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

_HEADER: Final = 16


def imported_code(module: ModuleType, source_bytes: bytes | None = None) -> CodeType | None:
    """The module's old code from its cache file, or None (see the module docstring)."""
    cached = getattr(module, "__cached__", None)
    origin = getattr(module, "__file__", None)
    if not isinstance(cached, str) or not isinstance(origin, str):
        return None
    try:
        with open(cached, "rb") as fh:
            data = fh.read()
        st = os.stat(origin)
    except OSError:
        return None
    if len(data) < _HEADER or data[:4] != importlib.util.MAGIC_NUMBER:
        return None
    flags = int.from_bytes(data[4:8], "little")
    if flags & 0b1:  # hash-based pyc: the same hash means it was compiled from today's file
        if source_bytes is None:
            return None
        if data[8:16] == importlib.util.source_hash(source_bytes):
            return None
    else:
        mtime = int.from_bytes(data[8:12], "little")
        size = int.from_bytes(data[12:16], "little")
        if mtime == (int(st.st_mtime) & 0xFFFFFFFF) and size == (st.st_size & 0xFFFFFFFF):
            return None  # compiled from the file as it is now: not the imported version
    try:
        # the import system loads this very file the same way; the code is never run here
        code = marshal.loads(data[_HEADER:])  # noqa: S302
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(code, CodeType) or not _is_running(code, module):
        return None
    return code


def _is_running(code: CodeType, module: ModuleType) -> bool:
    """True when the functions compiled in ``code`` are the code the module runs now."""
    live: dict[str, CodeType] = {}
    name = module.__name__
    for value in list(vars(module).values()):
        members = list(vars(value).values()) if isinstance(value, type) else [value]
        for member in members:
            fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            if (
                isinstance(fn, FunctionType)
                and fn.__module__ == name
                and "__wrapped__" not in fn.__dict__
            ):
                live.setdefault(fn.__qualname__, fn.__code__)
    compared = 0
    for qualname, function_code in _function_codes(code).items():
        running = live.get(qualname)
        if running is None:
            continue
        if running != function_code:
            return False
        compared += 1
    return compared > 0


def _function_codes(code: CodeType, prefix: str = "") -> dict[str, CodeType]:
    found: dict[str, CodeType] = {}
    for const in code.co_consts:
        if not isinstance(const, CodeType) or const.co_name.startswith("<"):
            continue
        qualname = prefix + const.co_name
        if const.co_flags & 0x1:  # CO_OPTIMIZED: a function
            found.setdefault(qualname, const)
        else:  # a class body
            found.update(_function_codes(const, qualname + "."))
    return found
