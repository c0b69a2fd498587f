"""The order in which a batch of modules is applied.

Rules:
1. A module comes after the modules of the batch it imports from.
2. A package comes after its submodules (``pkg`` after ``pkg.sub``); a submodule's import of
   its own parent package (``from . import x``) is not a dependency, or every package with
   relative imports would be a cycle.
3. Cycles are broken by request order, so the result is stable.
"""

from __future__ import annotations

from collections.abc import Sequence

from reloadctl.agent.engine.resolve import Target


def dependency_order(targets: Sequence[Target]) -> list[Target]:
    """``targets`` sorted by rules 1-3."""
    names = {t.name for t in targets}
    deps: dict[str, set[str]] = {}
    for t in targets:
        wanted = {
            other
            for other in names
            if other != t.name
            and (
                other.startswith(t.name + ".")  # rule 2: submodules first
                or (other in t.code.imports and not t.name.startswith(other + "."))
            )
        }
        deps[t.name] = wanted
    placed: list[Target] = []
    done: set[str] = set()
    remaining = list(targets)
    while remaining:
        for t in remaining:
            if deps[t.name] <= done:
                break
        else:
            t = remaining[0]  # rule 3: a cycle; take the earliest requested
        remaining.remove(t)
        placed.append(t)
        done.add(t.name)
    return placed
