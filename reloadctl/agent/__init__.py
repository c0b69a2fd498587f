"""The in-process side of reloadctl: the reload engine and the agent that serves it.

Importing this package is cheap and safe inside any host process: it loads nothing but
this file. Every name below is imported on first access (PEP 562), so ``start()`` does not
load the engine, and neither loads rpyc on the caller's thread nor anything of the CLI
(typer, rich, pydantic, click).

Public API (contracts in ../shared/DESIGN.md):

- ``reload_modules(names, *, dry_run=False, dependents=False) -> list[ModuleResult]``
- ``rollback_modules(names) -> list[ModuleResult]``
- ``start(listen=None, *, secret=None, secret_file=None, allow=None, ..., inherit=None,
  loop=None) -> Agent``
- ``start_in_children(*, secret=None, secret_file=None, allow=None, read_only=None)``:
  agents in this process's workers only (a pre-fork master)
"""

from __future__ import annotations

# typing is never imported at run time (annotations are strings): the host pays for it
# only if it uses it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from reloadctl.agent.engine import reload_modules, rollback_modules
    from reloadctl.agent.handle import Agent
    from reloadctl.agent.lifecycle import start, start_in_children
    from reloadctl.results import ModuleResult

#: public name -> module that defines it
_EXPORTS = {
    "Agent": "reloadctl.agent.handle",
    "start": "reloadctl.agent.lifecycle",
    "start_in_children": "reloadctl.agent.lifecycle",
    "reload_modules": "reloadctl.agent.engine",
    "rollback_modules": "reloadctl.agent.engine",
    "ModuleResult": "reloadctl.results",
}

__all__ = [
    "Agent",
    "ModuleResult",
    "reload_modules",
    "rollback_modules",
    "start",
    "start_in_children",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    if module == "reloadctl.agent.engine":
        # agent.forks rule 1: no fork in the middle of a reload, agent or not.
        importlib.import_module("reloadctl.agent.forks").guard_forks()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
