"""The code a module was imported with, recovered from its bytecode cache when possible.

The engine never sees the import that first ran a module, so on a module's first reload it
does not know which names the old source bound. When the module was imported from source
and a ``__pycache__`` file exists that was compiled from a *different* version of the source
than the one on disk now (its recorded mtime/size or hash differs), that file is the
version the process imported (nothing else rewrites it while the module stays imported,
short of another process importing the edited file). Its top-level stores then tell
exactly which names the old source bound. Anything doubtful returns None.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
from types import CodeType, ModuleType
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
    return code if isinstance(code, CodeType) else None
