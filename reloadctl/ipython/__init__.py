"""The IPython/Jupyter extension: ``%load_ext reloadctl.ipython``.

Gives ``%autoreload`` and ``%aimport`` with IPython's own syntax and modes, reloading with
reloadctl's engine (patch in place, one all-or-nothing call per cell), and ``%reloadctl
agent`` to start an agent in the kernel so ``reloadctl reload`` reaches the notebook.

Importing this package imports nothing of IPython; ``load_ipython_extension`` does.
Names IPython's own extension exports (``AutoreloadMagics``, ``ModuleReloader``,
``ImportFromTracker``) are available here too (PEP 562), so code written against
``IPython.extensions.autoreload`` can use this one.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from IPython.core.interactiveshell import InteractiveShell

    from reloadctl.ipython.imports import ImportFromTracker
    from reloadctl.ipython.magics import AutoreloadMagics, ReloadctlMagics
    from reloadctl.ipython.reloader import ModuleReloader

_EXPORTS = {
    "AutoreloadMagics": "reloadctl.ipython.magics",
    "ReloadctlMagics": "reloadctl.ipython.magics",
    "ModuleReloader": "reloadctl.ipython.reloader",
    "ImportFromTracker": "reloadctl.ipython.imports",
}

__all__ = [
    "AutoreloadMagics",
    "ImportFromTracker",
    "ModuleReloader",
    "ReloadctlMagics",
    "load_ipython_extension",
    "unload_ipython_extension",
]

#: shell -> the magics this extension registered there
_loaded: dict[int, tuple[Any, Any]] = {}


def load_ipython_extension(ip: InteractiveShell) -> None:
    """Register ``%autoreload``, ``%aimport`` and ``%reloadctl`` and the cell hooks."""
    from reloadctl.ipython.magics import AutoreloadMagics, ReloadctlMagics

    if id(ip) in _loaded:
        return
    autoreload = AutoreloadMagics(ip)
    control = ReloadctlMagics(ip, autoreload=autoreload)
    ip.register_magics(autoreload)
    ip.register_magics(control)
    ip.events.register("pre_run_cell", autoreload.pre_run_cell)
    ip.events.register("post_execute", autoreload.post_execute_hook)
    _loaded[id(ip)] = (autoreload, control)


def unload_ipython_extension(ip: InteractiveShell) -> None:
    """Unregister the cell hooks (the magics stay, disabled); the agent keeps running."""
    entry = _loaded.pop(id(ip), None)
    if entry is None:
        return
    autoreload, _ = entry
    autoreload._reloader.enabled = False
    ip.events.unregister("pre_run_cell", autoreload.pre_run_cell)
    ip.events.unregister("post_execute", autoreload.post_execute_hook)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
