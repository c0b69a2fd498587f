"""After every body of a batch ran: the links between modules (definitions moved to a
sibling, stale ``from m import x`` copies, star imports) are brought up to date.

Each step is optional (``faults`` rule 2): one that raises keeps the changes it already made
(each was recorded in an undo log before it was made, so a later rollback undoes them) and
is reported as a warning on the batch's first module; the reload itself goes on.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType

from reloadctl.agent.engine.dependents import add_star_exports, rebind_dependents
from reloadctl.agent.engine.faults import describe
from reloadctl.agent.engine.moves import Moved, follow_moves
from reloadctl.agent.engine.undo import UndoLog
from reloadctl.results import Action

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def link_batch(
    done: Sequence[tuple[str, ModuleType, dict[str, Any], UndoLog]],
    loaded_before: set[str],
    *,
    dependents: bool,
) -> tuple[dict[str, list[Action]], dict[str, list[str]]]:
    """Follow moves, rebind stale copies (between the batch's modules, or everywhere with
    ``dependents``) and, with ``dependents``, add new star exports. ``done`` holds each
    applied module as ``(name, module, snapshot before, undo log)``.

    Returns actions and warnings per module.
    """
    actions: dict[str, list[Action]] = {}
    warnings: dict[str, list[str]] = {}
    if not done:
        return actions, warnings
    first = done[0][0]
    changed = [(name, snapshot, vars(module), undo) for name, module, snapshot, undo in done]

    def skipped(what: str, exc: Exception) -> None:
        warnings.setdefault(first, []).append(
            f"the engine skipped {what} ({describe(exc)}); references elsewhere may keep "
            "old objects"
        )

    try:
        actions, warnings = follow_moves(
            [Moved(name, snapshot, undo) for name, _m, snapshot, undo in done],
            [name for name in list(sys.modules) if name not in loaded_before],
        )
    except Exception as exc:  # noqa: BLE001 - an optional step
        skipped("following definitions moved between modules", exc)
    if dependents or len(done) > 1:
        try:
            found = rebind_dependents(
                changed, only=None if dependents else frozenset(name for name, *_ in done)
            )
        except Exception as exc:  # noqa: BLE001 - an optional step
            skipped("rebinding from-import copies", exc)
            found = {}
        for module, more in found.items():
            actions.setdefault(module, []).extend(more)
    if dependents:
        try:
            for module, more in add_star_exports(changed).items():
                actions.setdefault(module, []).extend(more)
        except Exception as exc:  # noqa: BLE001 - an optional step
            skipped("adding new names to star importers", exc)
    return actions, warnings
