"""The order in which a batch of modules is applied.

Rules:
1. A module comes after the modules of the batch its body imports (imports inside its
   functions run later, when called: they do not order the batch).
2. A package comes after its submodules (``pkg`` after ``pkg.sub``); a submodule's import of
   its own parent package (``from . import x``) is not a dependency, or every package with
   relative imports would be a cycle.
3. Cycles are broken by taking the module with the fewest dependencies still pending, never
   a package while one of its own submodules is pending; ties by request order, so the
   result is stable.
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
                or (other in t.code.body_imports and not t.name.startswith(other + "."))
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
            t = _break_cycle(remaining, deps, done)
        remaining.remove(t)
        placed.append(t)
        done.add(t.name)
    return placed


def _break_cycle(remaining: list[Target], deps: dict[str, set[str]], done: set[str]) -> Target:
    """Rule 3."""
    pending = {t.name for t in remaining}
    leaves = [
        t for t in remaining if not any(n.startswith(t.name + ".") for n in pending)
    ] or remaining
    return min(leaves, key=lambda t: len(deps[t.name] - done))
