"""The IPython magics: ``%autoreload`` and ``%aimport`` (IPython's syntax), ``%reloadctl``.

Imports IPython: loaded by ``load_ipython_extension`` only.
"""

from __future__ import annotations

import logging
import sys

from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from reloadctl.errors import ReloadctlError
from reloadctl.ipython.imports import track_imports
from reloadctl.ipython.reloader import LOG, ModuleReloader, _quiet

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

    from reloadctl.agent import Agent

_MODES = {
    "0": "off",
    "off": "off",
    "1": "explicit",
    "explicit": "explicit",
    "2": "all",
    "all": "all",
    "3": "complete",
    "complete": "complete",
}


@magics_class
class AutoreloadMagics(Magics):
    """``%autoreload`` and ``%aimport``, with IPython's syntax, modes and output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reloader = ModuleReloader(self.shell)
        self._reloader.check_all = False
        self._reloader.autoload_obj = False
        self._last_cell: str | None = None

    @line_magic
    @magic_arguments.magic_arguments()
    @magic_arguments.argument(
        "mode",
        type=str,
        default="now",
        nargs="?",
        help="""blank or 'now': reload every changed module (except those excluded by
             %%aimport) now. '0'/'off': disable automatic reloading. '1'/'explicit': before
             each cell, reload the modules marked with %%aimport. '2'/'all': before each
             cell, reload every changed module except those excluded by %%aimport (the
             standard library and site-packages only when marked with %%aimport).
             '3'/'complete': as 2, and the names of from-imports follow the reloaded
             modules (in other modules and in this namespace; star imports get new names).
             A trailing '-' (IPython's older algorithm) is accepted and ignored.""",
    )
    @magic_arguments.argument(
        "-p", "--print", action="store_true", default=False, help="print reload activity"
    )
    @magic_arguments.argument(
        "-l", "--log", action="store_true", default=False, help="log reload activity (INFO)"
    )
    @magic_arguments.argument(
        "--hide-errors", action="store_true", default=False, help="hide reload errors"
    )
    @magic_arguments.argument(
        "--full", action="store_true", default=False, help="accepted for IPython; no effect"
    )
    def autoreload(self, line: str = "") -> None:
        """%autoreload [now|0|1|2|3|off|explicit|all|complete] [-p] [-l] [--hide-errors]

        Reload modules automatically before each cell, with reloadctl's engine: functions
        and classes are patched in place, every changed module is applied in one
        all-or-nothing call, and a module that fails to reload is left exactly as it was.
        """
        args = magic_arguments.parse_argstring(self.autoreload, line)
        mode = args.mode.lower().removesuffix("-")
        reloader = self._reloader
        if args.print and args.log:

            def both(msg: str) -> None:
                print(msg)
                LOG.info(msg)

            reloader._report = both
        elif args.print:
            reloader._report = print
        elif args.log:
            reloader._report = LOG.info
        else:
            reloader._report = _quiet
        reloader.hide_errors = args.hide_errors
        reloader.log_failures = args.log
        if mode in {"", "now"}:
            reloader.check(check_all=True)
            return
        named = _MODES.get(mode)
        if named is None:
            # a ValueError, as IPython's own %autoreload raises (its tests rely on it)
            raise ValueError(f'Unrecognized autoreload mode "{mode}".')
        reloader.enabled = named != "off"
        if named != "off":
            reloader.check_all = named != "explicit"
            reloader.autoload_obj = named == "complete"

    @line_magic
    def aimport(self, parameter_s: str = "", stream: TextIO | None = None) -> None:
        """%aimport [[-]mod[ as alias], ...]

        Without arguments, list the modules to reload and to skip. ``%aimport foo, bar``
        imports them and marks them for ``%autoreload 1`` (and for every mode when they live
        in site-packages); ``%aimport -foo`` never reloads ``foo``.
        """
        reloader = self._reloader
        shell = self.shell
        if not parameter_s.strip():
            out = stream if stream is not None else sys.stdout
            if reloader.check_all:
                out.write("Modules to reload:\nall-except-skipped\n")
            else:
                out.write("Modules to reload:\n{}\n".format(" ".join(sorted(reloader.modules))))
            out.write("\nModules to skip:\n{}\n".format(" ".join(sorted(reloader.skip_modules))))
            return
        for item in (part.strip() for part in parameter_s.split(",")):
            if not item:
                continue
            if item.startswith("-"):
                reloader.mark_module_skipped(item[1:].strip())
                continue
            assert shell is not None, "%aimport needs a shell to import into"
            real, sep, alias = item.partition(" as ")
            top_module, top_name = reloader.aimport_module(real.strip())
            if sep:
                # ``import a.b as c`` binds the submodule itself
                shell.push({alias.strip(): sys.modules[real.strip()]})
            else:
                shell.push({top_name: top_module})

    def pre_run_cell(self, info: Any = None) -> None:
        """The ``pre_run_cell`` event: reload what changed before the cell runs."""
        self._last_cell = getattr(info, "transformed_cell", None) or getattr(info, "raw_cell", None)
        if self._reloader.enabled:
            try:
                self._reloader.check()
            except Exception:  # a bug of ours must not stop the user's cell
                logging.getLogger(__name__).exception("autoreload check failed")

    def post_execute_hook(self, *args: Any) -> None:
        """The ``post_execute`` event: record the modules the cell imported (their later
        edits count) and its from-imports (mode 3)."""
        self._reloader.stamps.refresh()
        cell, self._last_cell = self._last_cell, None
        if cell:
            track_imports(cell, self._reloader.import_from_tracker)


@magics_class
class ReloadctlMagics(Magics):
    """``%reloadctl agent [ADDR]``, ``%reloadctl status``, ``%reloadctl stop``."""

    def __init__(self, *args: Any, autoreload: AutoreloadMagics | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._autoreload = autoreload
        self._agent: Agent | None = None

    @line_magic
    def reloadctl(self, line: str = "") -> None:
        """%reloadctl agent [ADDR] | status | stop

        ``agent`` starts a reloadctl agent in this kernel (default: this user's unix socket,
        so ``reloadctl ps`` lists it and ``reloadctl reload --local mod`` patches it);
        ``status`` shows the agent's address and the modules patched in this process;
        ``stop`` stops the agent.
        """
        words = line.split()
        command = words[0] if words else "status"
        if command == "agent" and len(words) <= 2:
            import reloadctl.agent

            try:
                self._agent = reloadctl.agent.start(words[1] if len(words) == 2 else None)
            except ReloadctlError as exc:  # bad address, TCP without a secret, busy port...
                # IPython shows a UsageError as one line (its exact type, not a subclass)
                raise UsageError(f"reloadctl agent: {exc}") from exc
            print(f"reloadctl agent listening at {self._agent.address}")
        elif command == "stop" and len(words) == 1:
            if self._agent is not None:
                self._agent.stop()
                print(f"reloadctl agent at {self._agent.address} stopped")
                self._agent = None
            else:
                print("no reloadctl agent was started here")
        elif command == "status" and len(words) == 1:
            print("\n".join(status_lines(self._agent, self._autoreload)))
        else:
            raise UsageError(f"usage: %reloadctl agent [ADDR] | status | stop (got {line!r})")


def status_lines(agent: Agent | None, autoreload: AutoreloadMagics | None) -> list[str]:
    """What ``%reloadctl status`` prints: the agent, the autoreload mode, patched modules."""
    import os
    import time

    lines = [f"pid {os.getpid()}, Python {sys.version.split()[0]}"]
    if agent is not None and agent.running:
        lines.append(f"agent: {agent.address}")
    else:
        lines.append("agent: not started (%reloadctl agent starts one)")
    if autoreload is not None:
        reloader = autoreload._reloader
        if not reloader.enabled:
            mode = "off"
        elif reloader.autoload_obj:
            mode = "3 (complete)"
        else:
            mode = "2 (all)" if reloader.check_all else "1 (explicit)"
        lines.append(f"autoreload: {mode}, {len(reloader.stamps.watched())} modules watched")
        lines.extend(f"  {line}" for line in reloader.failed.values())
    patched = _patched_modules()
    if not patched:
        lines.append("patched modules: none")
    else:
        lines.append("patched modules:")
        for item in patched:
            when = time.strftime("%H:%M:%S", time.localtime(item.last_reload))
            diverged = {True: ", differs from disk", False: "", None: ""}[item.diverged]
            lines.append(f"  {item.module}: {item.reloads} reload(s), last {when}{diverged}")
    return lines


def _patched_modules() -> list[Any]:
    # The engine is imported by a first reload; before that nothing can have been patched.
    if "reloadctl.agent.engine" not in sys.modules:
        return []
    import reloadctl.agent

    try:  # the agent's public API, where it offers it
        listing = reloadctl.agent.patched_modules
    except AttributeError:  # the engine's public function otherwise
        from reloadctl.agent.engine import patched_modules as listing
    return list(listing())
