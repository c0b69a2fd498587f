"""The changed-file check run before each cell: which loaded modules' source files changed.

Rules:
1. A module is watched when it is in ``sys.modules`` as a real module, has Python source
   (``__file__`` ending in ``.py``, or a ``.pyc`` whose source is found by
   ``source_from_cache``), is not ``__main__``/``__mp_main__`` nor part of reloadctl, and
   its file is outside the standard library and site-packages, unless the module was named
   explicitly (``%aimport``) or ``library=True``.
2. A file's stamp is ``(st_mtime_ns, st_size)``; a change is any difference (not only a
   later mtime), so a checkout of an older version counts too.
3. The first time a module is seen its stamp is recorded, never reported: only edits made
   after the import count (the post-execute hook records modules a cell imported).
4. A file that cannot be stat'ed (deleted, moved) is skipped and keeps its last stamp:
   when it comes back, it counts as changed if its stamp differs.
5. Cost: ``changed()`` stats only the watched files. The module->file map is rebuilt only
   when ``sys.modules`` changed size, or a watched name is bound to another module object;
   a rebuild looks at each module object once (verdicts are cached by identity).
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Container, Iterable
from types import ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    Stamp = tuple[int, int]

_MAIN_NAMES: Final = frozenset({"__main__", "__mp_main__"})


def library_dirs() -> tuple[str, ...]:
    """Directories of the standard library and of installed packages (with a trailing
    separator, for ``str.startswith``)."""
    dirs: set[str] = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if key in paths:
            dirs.add(paths[key])
    # a virtualenv's interpreter reports its own site-packages; the base install has the
    # standard library, and user site-packages are "installed" too
    for prefix in {sys.base_prefix, sys.base_exec_prefix}:
        base = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})
        dirs.update(base[key] for key in ("stdlib", "platstdlib") if key in base)
    if hasattr(site, "getsitepackages"):  # an old virtualenv's site.py lacks it
        dirs.update(site.getsitepackages())
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE is not False else None
    if user_site:
        dirs.add(user_site)
    return tuple(sorted({os.path.join(os.path.realpath(d), "") for d in dirs}))


def source_file(module: object) -> str | None:
    """The module's Python source file (rule 1), or None when it has none to watch."""
    if not isinstance(module, ModuleType):
        return None
    try:
        filename = module.__dict__.get("__file__")
    except Exception:  # noqa: BLE001 - a module subclass may do anything
        return None
    if not isinstance(filename, str):
        return None
    if filename.endswith(".py"):
        return filename
    if filename.endswith(".pyc"):
        from importlib.util import source_from_cache

        try:
            return source_from_cache(filename)
        except ValueError:
            return None
    return None


class SourceStamps:
    """The stamps of watched modules' source files (rules 1-5).

    Args:
        explicit: names watched whatever their location (``%aimport``); read on rebuild,
            call ``invalidate()`` after changing it.
        library: also watch the standard library and site-packages.
    """

    def __init__(self, explicit: Container[str] = (), *, library: bool = False) -> None:
        self.explicit = explicit
        self.library = library
        self._library_dirs = library_dirs()
        #: name -> (module, source file or None, file is in a library dir)
        self._verdicts: dict[str, tuple[object, str | None, bool]] = {}
        #: name -> stamp of every module seen so far (kept across rebuilds: rule 4)
        self._stamps: dict[str, Stamp] = {}
        #: the watched modules, as of the last rebuild: (name, module, file)
        self._watched: list[tuple[str, object, str]] = []
        self._size = -1

    def invalidate(self) -> None:
        """Rebuild the watch list at the next call (``explicit`` or ``library`` changed)."""
        self._size = -1

    def refresh(self) -> None:
        """Rebuild the module->file map if ``sys.modules`` changed (rule 5), recording the
        stamps of modules seen for the first time (rule 3)."""
        if len(sys.modules) != self._size:
            self._rebuild()

    def watched(self) -> list[str]:
        """Names of the modules watched now."""
        self.refresh()
        return [name for name, _, _ in self._watched]

    def changed(self, only: Iterable[str] | None = None, skip: Container[str] = ()) -> list[str]:
        """Names of watched modules whose file changed since the last call that saw it;
        their new stamps are recorded. ``only`` restricts the check to those names."""
        self.refresh()
        result = self._scan(only, skip)
        if result is None:  # a watched name now holds another module: rule 5
            self._rebuild()
            result = self._scan(only, skip)
        return result or []

    def forget(self, name: str) -> None:
        """Drop what is known about ``name`` (its next sighting records a fresh stamp)."""
        self._stamps.pop(name, None)
        self._verdicts.pop(name, None)
        self.invalidate()

    def _scan(self, only: Iterable[str] | None, skip: Container[str]) -> list[str] | None:
        modules = sys.modules
        stamps = self._stamps
        stat = os.stat
        watched: Iterable[tuple[str, object, str]] = self._watched
        if only is not None:
            wanted = set(only)
            watched = [entry for entry in self._watched if entry[0] in wanted]
        out: list[str] = []
        for name, module, path in watched:
            if name in skip:
                continue
            if modules.get(name) is not module:
                return None
            try:
                st = stat(path)
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            if stamps.get(name) != stamp:
                stamps[name] = stamp
                out.append(name)
        return out

    def _rebuild(self) -> None:
        verdicts = self._verdicts
        library_dirs = self._library_dirs
        explicit = self.explicit
        watched: list[tuple[str, object, str]] = []
        fresh: dict[str, tuple[object, str | None, bool]] = {}
        for name, module in list(sys.modules.items()):
            verdict = verdicts.get(name)
            if verdict is None or verdict[0] is not module:
                if verdict is not None:
                    self._stamps.pop(name, None)  # another module object: a new sighting
                path = None
                if name not in _MAIN_NAMES and name.partition(".")[0] != "reloadctl":
                    path = source_file(module)
                in_library = path is not None and os.path.realpath(path).startswith(library_dirs)
                verdict = (module, path, in_library)
            fresh[name] = verdict
            _, path, in_library = verdict
            if path is None or (in_library and not self.library and name not in explicit):
                continue
            watched.append((name, module, path))
            if name not in self._stamps:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                self._stamps[name] = (st.st_mtime_ns, st.st_size)
        for name in [name for name in self._stamps if name not in fresh]:
            del self._stamps[name]  # unloaded: a later import is a new sighting
        self._verdicts = fresh
        self._watched = watched
        self._size = len(sys.modules)
