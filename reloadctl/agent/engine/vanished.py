"""Modules an upgrade removed: in a batch that also reloads one of its parent packages, a
module whose source is gone was deleted by the new release (marshmallow 4 dropped
``marshmallow.base``), not lost by accident.

Rules:
1. Such a module does not fail the batch; once everything else applied, it leaves
   ``sys.modules`` and its parent package's attribute (as after a fresh import of the new
   release), reported as ``reloaded`` with a ``removed`` action and a warning: references
   held to the module object keep it, with its old code.
2. Alone, or without a parent package in the batch, a vanished source stays a failure
   (``FileNotFoundError``): nothing says the removal was meant.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping

from reloadctl.results import RELOADED, Action, ModuleResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_GONE = "FileNotFoundError"


def removed_by_upgrade(
    results: Mapping[str, ModuleResult], prepared: Mapping[str, Any], target_type: type
) -> dict[str, str]:
    """``{module: parent package in the batch}`` for each failed result of rule 1."""
    found: dict[str, str] = {}
    for name, result in results.items():
        if result.error is None or result.error.type != _GONE or name not in sys.modules:
            continue
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:cut])
            if isinstance(prepared.get(parent), target_type):
                found[name] = parent
                break
    return found


def remove(name: str, parent: str, ms: float) -> ModuleResult:
    """Rule 1 for one module; returns its result."""
    module = sys.modules.pop(name, None)
    holder_name, _, child = name.rpartition(".")
    holder = sys.modules.get(holder_name)
    if holder is not None and module is not None and getattr(holder, child, None) is module:
        with contextlib.suppress(AttributeError, TypeError):
            delattr(holder, child)
    return ModuleResult(
        name,
        RELOADED,
        actions=(Action("removed", name, f"its source is gone with the upgrade of {parent}"),),
        warnings=(
            f"{name} was removed from sys.modules: the new release of {parent} has no such "
            "module; references held to it keep the old module",
        ),
        duration_ms=ms,
    )
