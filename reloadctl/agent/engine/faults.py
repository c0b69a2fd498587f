"""The engine's own failures: an internal error on some construct is reported as
``EngineError`` (never as the user's exception type), and optional steps degrade to warnings.

Rules:
1. An exception raised by the engine's own code after a module body ran (matching, patching,
   pruning) fails that module with error type ``EngineError``; everything is undone first.
2. An optional step (patching one definition in place, re-pointing one container, the
   live-closure pass, following moves, rebinding dependents) that raises is undone on its
   own and reported as a warning: the reload Python itself could execute still happens.
"""

from __future__ import annotations

from reloadctl.errors import ReloadctlError


class EngineError(ReloadctlError):
    """The reload engine failed on a construct of the reloaded code (a bug of the engine,
    never the user's): the module was left exactly as it was."""


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, short enough for a warning."""
    text = str(exc)
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
