"""Verify or roll back: call the request's check after a reload, undo the reload if it fails.

Rules:
1. A reload request may name ``verify = "module:function"`` (``function`` may be a dotted
   attribute path, ``Class.method``). After a reload whose every result is ok (reloaded,
   unchanged or not_loaded; never after a dry run or a failed reload, which the engine has
   already undone), the job's worker thread calls it with no arguments.
2. The check fails when its module is outside the agent's ``allow`` patterns, cannot be
   imported, has no such attribute, is not callable, raises (anything, ``SystemExit``
   included), returns ``False``, or returns after the job's deadline (the client was told
   ``Timeout`` by then, so the process must not keep what it was told failed).
3. On failure the modules this call reloaded are rolled back at once with the engine's
   ``rollback_modules``, and every module of the request is ``failed`` with
   ``ErrorInfo("VerifyFailed", <why>)``; its actions are the rollback's (what is in effect
   now) and the message says if the rollback itself did not succeed.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from reloadctl.results import FAILED, OK_STATUSES, RELOADED, ErrorInfo, ModuleResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from reloadctl.agent.jobs import Engine

log = logging.getLogger(__name__)

VERIFY_FAILED: Final = "VerifyFailed"
_MAX_TRACEBACK: Final = 8_000


def _allowed(name: str, allow: Sequence[str] | None) -> bool:
    return allow is None or any(fnmatch.fnmatchcase(name, p) for p in allow)


def resolve(spec: str, allow: Sequence[str] | None) -> Callable[[], object]:
    """The zero-argument callable ``spec`` names (rule 2).

    Raises:
        LookupError: with a one-line reason when it cannot be used.
    """
    module_name, sep, path = spec.partition(":")
    if not sep or not module_name or not path:
        raise LookupError(f"verify {spec!r}: expected MODULE:FUNCTION")
    if not _allowed(module_name, allow):
        raise LookupError(
            f"verify {spec!r}: module {module_name!r} is outside this agent's allow list"
        )
    try:
        target: object = sys.modules.get(module_name) or importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001 - an import error of the check is its failure
        raise LookupError(
            f"verify {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    for part in path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LookupError(f"verify {spec!r}: {module_name!r} has no {path!r}") from None
    if not callable(target):
        raise LookupError(f"verify {spec!r}: {path!r} is not callable")
    return target


def check(spec: str, allow: Sequence[str] | None) -> str | None:
    """Run the check; None when it passed, else why it failed (one line, plus a traceback
    after a newline when it raised)."""
    try:
        func = resolve(spec, allow)
    except LookupError as exc:
        return str(exc)
    try:
        outcome = func()
    except BaseException as exc:  # noqa: BLE001 - rule 2: SystemExit from a check fails it
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return f"verify {spec} raised {type(exc).__name__}: {exc}\n{tb[-_MAX_TRACEBACK:]}"
    if outcome is False:
        return f"verify {spec} returned False"
    return None


def verify_or_roll_back(
    engine: Engine,
    spec: str,
    results: list[ModuleResult],
    *,
    allow: Sequence[str] | None,
    past_deadline: Callable[[], bool],
) -> list[ModuleResult]:
    """Rules 1-3: ``results`` of the reload just applied, or the ``VerifyFailed`` ones."""
    if not spec or not results or any(r.status not in OK_STATUSES for r in results):
        return results
    reason = check(spec, allow)
    if reason is None and past_deadline():
        reason = f"verify {spec} returned after the job's deadline"
    if reason is None:
        return results
    message, _, tb = reason.partition("\n")
    reloaded = [r.module for r in results if r.status == RELOADED]
    undone: dict[str, ModuleResult] = {}
    rollback_error = ""
    if reloaded:
        try:
            undone = {r.module: r for r in engine.rollback_modules(reloaded, allow=allow)}
        except BaseException as exc:
            log.exception("rollback after a failed verify raised")
            rollback_error = f"{type(exc).__name__}: {exc}"
    log.warning("%s; rolled back %s", message, ", ".join(reloaded) or "nothing")
    out: list[ModuleResult] = []
    for r in results:
        back = undone.get(r.module)
        text = message
        if r.module in reloaded:
            if back is not None and back.status == RELOADED:
                text += "; rolled back"
            else:
                why = rollback_error or (
                    "no result" if back is None else f"{back.status}: {back.error}"
                )
                text += f"; ROLLBACK FAILED ({why})"
        out.append(
            ModuleResult(
                r.module,
                FAILED,
                ErrorInfo(VERIFY_FAILED, text, tb),
                actions=back.actions if back is not None else (),
                warnings=r.warnings,
                duration_ms=r.duration_ms + (back.duration_ms if back is not None else 0.0),
            )
        )
    return out
