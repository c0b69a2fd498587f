"""The autoreload state and its check: modes, marked modules, one engine call per cell.

Rules:
1. Modes as IPython's: 0 ``enabled=False``; 1 ``check_all=False`` (only ``modules``, the
   ``%aimport``-ed); 2 ``check_all=True``; 3 also ``autoload_obj=True``: the engine rebinds
   dependents' from-imports and the user namespace follows its from-imports
   (``reloadctl.ipython.imports``). ``skip_modules`` are never reloaded.
2. Every module whose file changed is reloaded in ONE ``reload_modules`` call (dependency
   order, one transaction). The modules of a failed call were left as they were: when a
   file of one of them is saved again, the whole failed call is retried with the new
   changes, so a fix saved in one file completes the earlier change; a save of an
   unrelated file reloads that file alone.
3. A failure prints one line per module on stderr, ``[autoreload of m failed: file:line:
   Type: message]``, and changes nothing; it is not tried again until one of its modules'
   files is saved again (no line on every cell).
4. ``_report`` (``--print``/``--log``) gets ``Reloading 'm'.`` for each module of the call,
   then what was patched and every warning; with ``--log`` failure lines are also logged
   (WARNING).
"""

from __future__ import annotations

import importlib
import logging
import re
import sys

from reloadctl.ipython.imports import ImportFromTracker, Snapshot
from reloadctl.ipython.stamps import SourceStamps
from reloadctl.results import FAILED, NOT_LOADED, REFUSED, RELOADED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping, Sequence
    from types import ModuleType
    from typing import Any, Final

    from reloadctl.results import ModuleResult

#: The logger ``--log`` writes to: IPython's autoreload uses this name, so a logging setup
#: made for it keeps working.
LOG: Final = logging.getLogger("autoreload")
#: At most this many names per kind of action in a ``--print`` line.
_NAMES_SHOWN: Final = 6
_FILE_LINE: Final = re.compile(r'File "([^"]+)", line (\d+)')
_SYNTAX_WHERE: Final = re.compile(r" \([^()]*, line \d+\)$")


def _quiet(msg: str) -> None:
    return None


class ModuleReloader:
    """Reload changed modules before each cell (rules 1-4).

    Attributes:
        enabled, check_all, autoload_obj: the mode (rule 1).
        modules: names marked by ``%aimport`` (value ``True``).
        skip_modules: names marked by ``%aimport -name`` (value ``True``).
        failed: module -> the error line of its last failed reload, until it succeeds.
        import_from_tracker: the user namespace's from-imports (mode 3).
        hide_errors: no failure lines (``--hide-errors``).
    """

    def __init__(self, shell: Any = None) -> None:
        self.enabled = False
        self.check_all = True
        self.autoload_obj = False
        self.hide_errors = False
        #: also log failure lines to the ``autoreload`` logger (``--log``)
        self.log_failures = False
        self.modules: dict[str, bool] = {}
        self.skip_modules: dict[str, bool] = {}
        self.failed: dict[str, str] = {}
        self.import_from_tracker = ImportFromTracker()
        #: the shell whose ``user_ns`` mode 3 updates (read at each reload: ``%reset`` may
        #: give it a new one)
        self.shell = shell
        self._report: Callable[[str], None] = _quiet
        #: reloads asked for and not applied yet (rule 2)
        self._pending: set[str] = set()
        self.stamps = SourceStamps(self.modules)
        self.stamps.refresh()

    # -- marks (``%aimport``) ----------------------------------------------------------------

    def mark_module_skipped(self, module_name: str) -> None:
        """Never reload ``module_name`` (``%aimport -name``)."""
        self.modules.pop(module_name, None)
        self.skip_modules[module_name] = True
        self.stamps.invalidate()

    def mark_module_reloadable(self, module_name: str) -> None:
        """Reload ``module_name`` in mode 1 too, even from site-packages (``%aimport name``)."""
        self.skip_modules.pop(module_name, None)
        self.modules[module_name] = True
        self.stamps.invalidate()

    def aimport_module(self, module_name: str) -> tuple[ModuleType, str]:
        """Mark ``module_name`` reloadable and import it; returns its top-level package and
        that package's name (what ``import a.b`` binds).

        Raises:
            ImportError: it cannot be imported.
        """
        self.mark_module_reloadable(module_name)
        importlib.import_module(module_name)
        top_name = module_name.partition(".")[0]
        return sys.modules[top_name], top_name

    def clear_import_tracker(self) -> None:
        """Forget the tracked from-imports."""
        self.import_from_tracker = ImportFromTracker()

    # -- the check ---------------------------------------------------------------------------

    def check(self, check_all: bool = False, do_reload: bool = True) -> list[ModuleResult]:
        """Reload what changed (rules 1-3); ``check_all`` checks every watched module
        whatever the mode, ``do_reload=False`` only records the current stamps."""
        if not self.enabled and not check_all:
            return []
        only = None if check_all or self.check_all else list(self.modules)
        changed = self.stamps.changed(only, self.skip_modules)
        if not changed or not do_reload:
            return []
        names = changed
        if self._pending.intersection(changed):  # a file of the failed step was saved again
            names = changed + sorted(
                name for name in self._pending - set(changed) if name not in self.skip_modules
            )
        return self.reload(names)

    def reload(self, names: Sequence[str]) -> list[ModuleResult]:
        """Reload ``names`` in one engine call and report it (rules 2-4)."""
        from reloadctl.agent import reload_modules

        for name in names:
            self._report(f"Reloading '{name}'.")
        snapshot = Snapshot(self.import_from_tracker) if self.autoload_obj else None
        results = reload_modules(list(names), dependents=self.autoload_obj)
        self._pending.difference_update(names)
        for result in results:
            if result.status == FAILED:
                self._pending.add(result.module)
                line = f"[autoreload of {result.module} failed: {failure_text(result)}]"
                self.failed[result.module] = line
                self._show_failure(line)
            elif result.status == REFUSED:
                reason = result.error.message if result.error is not None else "refused"
                self._show_failure(f"[autoreload of {result.module} refused: {reason}]")
            else:
                self.failed.pop(result.module, None)
                if result.status == NOT_LOADED:
                    self.stamps.forget(result.module)
            self._report_result(result)
        reloaded = any(result.status == RELOADED for result in results)
        user_ns: MutableMapping[str, Any] | None = getattr(self.shell, "user_ns", None)
        if snapshot is not None and user_ns is not None and reloaded:
            rebound = snapshot.apply(user_ns)
            if rebound:
                self._report(f"  user namespace: {_names(rebound)}")
        return results

    def _show_failure(self, line: str) -> None:
        if not self.hide_errors:
            print(line, file=sys.stderr)
        if self.log_failures:
            LOG.warning("%s", line)

    def _report_result(self, result: ModuleResult) -> None:
        # "unchanged" adds nothing to "Reloading 'm'." (IPython prints that line alone);
        # failures have their own line on stderr, and a record with --log
        if self._report is _quiet or result.status != RELOADED:
            return
        kinds: dict[str, list[str]] = {}
        for action in result.actions:
            kinds.setdefault(action.kind, []).append(action.name)
        summary = "; ".join(f"{kind} {_names(names)}" for kind, names in kinds.items())
        self._report(f"  {result.module}: {summary or 'reloaded'}")
        for warning in result.warnings:
            self._report(f"  {result.module}: warning: {warning}")


def failure_text(result: ModuleResult) -> str:
    """``file:line: Type: message`` for a failed result (the location when it is known)."""
    error = result.error
    if error is None:
        return "unknown error"
    message = error.message
    if error.type == "RolledBack":
        return message  # "rolled back: m failed (...) in the same batch"
    where = ""
    matches = _FILE_LINE.findall(error.traceback)
    if matches:
        path, line = matches[-1]
        where = f"{path}:{line}: "
        if error.type in {"SyntaxError", "IndentationError", "TabError"}:
            message = _SYNTAX_WHERE.sub("", message)
    return f"{where}{error.type}: {message}"


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = len(names) - _NAMES_SHOWN
    return f"{shown} (+{more} more)" if more > 0 else shown
