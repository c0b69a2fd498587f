"""The in-memory import finder and loader that serve pushed source (``reloadctl reload --push``).

Rules:
1. ``FINDER`` sits first on ``sys.meta_path`` once a push was applied and answers for
   exactly the pushed names: a pushed module gets a spec whose loader is a
   ``PushedLoader`` holding that version's text (``get_source``, ``get_filename``,
   ``get_code``, ``is_package``); a name inside a package pushed as a whole tree that the
   push did not ship raises ``ModuleNotFoundError`` (the new version has no such module);
   every other name is left to the next finder.
2. A pushed file's filename is ``push:<sha256[:12]>/<path>``, which exists on no disk, and
   its text is registered in ``linecache`` (and served lazily by the loader after a
   ``linecache.clearcache()``), so tracebacks and ``inspect.getsource`` show the pushed
   text of the version that ran, never a file on disk.
3. Entries change in two steps: ``stage`` makes a push visible for the engine call that
   applies it, then ``commit`` keeps it (and registers its text in ``linecache``, where
   the two latest versions of each module stay) or ``discard`` puts back exactly what was
   there before (a failed reload leaves no pushed entry, and no text, behind).
   ``forget``/``keep`` adjust one name after a rollback. All of this is guarded by one lock.
"""

from __future__ import annotations

import linecache
import sys
import threading
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import CodeType, ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any


@dataclass(frozen=True, slots=True)
class PushedFile:
    """One module's pushed source, as the agent keeps it."""

    module: str
    path: str
    text: str
    digest: str
    is_package: bool

    @property
    def filename(self) -> str:
        """The code's filename (rule 2): ``push:<sha256[:12]>/<path>``."""
        return f"push:{self.digest[:12]}/{self.path}"


class PushedLoader:
    """Loads one ``PushedFile`` (a loader per version: old code objects keep their text)."""

    def __init__(self, file: PushedFile) -> None:
        self.file = file

    def __repr__(self) -> str:
        return f"<PushedLoader {self.file.module} {self.file.digest[:12]}>"

    def _check(self, name: str) -> None:
        if name != self.file.module:
            raise ImportError(f"this loader serves {self.file.module}, not {name}", name=name)

    def get_source(self, name: str) -> str:
        self._check(name)
        return self.file.text

    def get_filename(self, name: str) -> str:
        self._check(name)
        return self.file.filename

    def is_package(self, name: str) -> bool:
        self._check(name)
        return self.file.is_package

    def get_code(self, name: str) -> CodeType:
        self._check(name)
        register_lines(self.file)
        code: CodeType = compile(self.file.text, self.file.filename, "exec", dont_inherit=True)
        return code

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        exec(self.get_code(module.__name__), module.__dict__)  # noqa: S102 - an import


def register_lines(file: PushedFile) -> None:
    """Put ``file``'s text in ``linecache`` under its filename (mtime None: never checked)."""
    lines = file.text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[file.filename] = (len(file.text), None, lines, file.filename)


def spec_for(file: PushedFile) -> ModuleSpec:
    """The spec of a pushed module: origin its push filename, no bytecode cache; a package's
    search path is its push directory, so disk submodules are not found under it."""
    # PushedLoader is a loader by protocol; importlib.abc (for the ABC) costs an import of
    # importlib.resources in the host, for nothing
    loader: Any = PushedLoader(file)
    spec = ModuleSpec(file.module, loader, origin=file.filename, is_package=False)
    spec.has_location = True
    if file.is_package:
        spec.submodule_search_locations = [file.filename.rpartition("/")[0]]
    return spec


class PushFinder:
    """A ``sys.meta_path`` finder for pushed modules (rules 1 and 3). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, PushedFile] = {}
        self._trees: set[str] = set()
        self._saved: tuple[dict[str, PushedFile], set[str]] | None = None
        self._staged: list[PushedFile] = []
        self._lines: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return "<reloadctl PushFinder>"

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        with self._lock:
            file = self._files.get(name)
            shipped_tree = any(name.startswith(tree + ".") for tree in self._trees)
        if file is not None:
            return spec_for(file)
        if shipped_tree:
            raise ModuleNotFoundError(
                f"No module named {name!r} (not in the pushed tree)", name=name
            )
        return None

    def invalidate_caches(self) -> None:
        """Nothing cached: entries change only through ``stage``/``commit``."""

    def get(self, name: str) -> PushedFile | None:
        """The pushed file served for ``name`` now, or None."""
        with self._lock:
            return self._files.get(name)

    def stage(self, files: Iterable[PushedFile], trees: Iterable[str]) -> None:
        """Serve ``files`` from now on; a package in ``trees`` loses the entries it had.

        Raises:
            RuntimeError: a push is already staged (jobs run one at a time: a bug).
        """
        files = list(files)
        with self._lock:
            if self._saved is not None:
                raise RuntimeError("a push is already staged")
            self._saved = (dict(self._files), set(self._trees))
            for tree in trees:
                for name in [n for n in self._files if n.startswith(tree + ".")]:
                    del self._files[name]
                self._trees.add(tree)
            self._files.update((f.module, f) for f in files)
            self._staged = files
        install()

    def commit(self) -> None:
        """Keep what ``stage`` put in place."""
        with self._lock:
            self._saved = None
            staged, self._staged = self._staged, []
        for file in staged:
            # the text of this version and of the one before it (what a rollback returns
            # to) stay in linecache; older pushed versions of the module are dropped, so
            # a long watch --push session does not keep every saved copy
            kept = self._lines.setdefault(file.module, [])
            if file.filename not in kept:
                kept.append(file.filename)
            for old in kept[:-2]:
                linecache.cache.pop(old, None)
            del kept[:-2]
            register_lines(file)

    def discard(self) -> None:
        """Put back exactly the entries there were before ``stage``."""
        with self._lock:
            if self._saved is not None:
                self._files, self._trees = self._saved
                self._saved = None
            staged, self._staged = self._staged, []
        for file in staged:  # an import or a traceback during the attempt may have put it
            if file.filename not in self._lines.get(file.module, ()):
                linecache.cache.pop(file.filename, None)

    def keep(self, file: PushedFile) -> None:
        """Serve ``file`` for its module (a rollback went back to this pushed version)."""
        with self._lock:
            self._files[file.module] = file

    def forget(self, name: str) -> None:
        """Stop serving ``name`` and its tree (a rollback went back to the disk version)."""
        with self._lock:
            self._files.pop(name, None)
            self._trees.discard(name)


FINDER = PushFinder()


def install() -> None:
    """Put ``FINDER`` first on ``sys.meta_path`` (moving it there if something came first)."""
    if sys.meta_path and sys.meta_path[0] is FINDER:
        return
    while FINDER in sys.meta_path:
        sys.meta_path.remove(FINDER)
    sys.meta_path.insert(0, FINDER)
