"""The reload engine: patch loaded modules in place from their current source, all or nothing.

Public API (contracts in ../shared/DESIGN.md, "In-process engine" and "The reload engine"):

- ``reload_modules(names, *, dry_run=False, dependents=False, allow=None)``
- ``rollback_modules(names, *, allow=None)``
- ``patched_modules()``

Modules, one concept each: ``resolve`` (refusals, spec and source), ``source`` (reading,
digest, compile, static analysis), ``order`` (batch order), ``namespace`` (the module
transaction), ``adopt`` (matching new to old by qualname), ``functions``, ``classes``,
``enums``, ``closures`` (the only heap walk), ``dependents``, ``plan`` (dry run and
first-sight unchanged proof), ``undo`` (the undo log), ``history`` (lock, per-module memory,
rollback), ``batch`` (the public operations).
"""

from __future__ import annotations

from reloadctl.agent.engine.batch import patched_modules, reload_modules, rollback_modules

__all__ = ["patched_modules", "reload_modules", "rollback_modules"]
