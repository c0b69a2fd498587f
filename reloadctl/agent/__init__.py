"""The in-process side of reloadctl: the reload engine and the agent that serves it.

Importing this package is cheap and safe inside any host process: it loads neither rpyc
(that happens in ``start()``) nor anything of the CLI (typer, rich, pydantic, click).

Public API (contracts in ../shared/DESIGN.md):

- ``reload_modules(names, *, dry_run=False, dependents=False) -> list[ModuleResult]``
- ``rollback_modules(names) -> list[ModuleResult]``
- ``start(listen=None, *, secret=None, secret_file=None, allow=None, ...) -> Agent``
"""

from __future__ import annotations

from reloadctl.agent.engine import reload_modules, rollback_modules
from reloadctl.agent.lifecycle import Agent, start
from reloadctl.proto.messages import ModuleResult

__all__ = ["Agent", "ModuleResult", "reload_modules", "rollback_modules", "start"]
