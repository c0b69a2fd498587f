"""Did each target do what was asked: ok/failed per (target, module), rollout thresholds, exit code.

The one place these are decided; pure functions over outcomes (no I/O). Rules:

1. A module record is ok when its status is ``reloaded``, ``unchanged`` or ``not_loaded``,
   except ``not_loaded`` for a module that no answering target has loaded (a typo, usually:
   ``modules_loaded_nowhere``). A ping/status outcome (no module records) is ok when the
   agent answered.
2. A target failed, for rollouts, when one of its records is not ok by rule 1;
   ``not_attempted`` never counts, ``unreachable`` counts unless ``ignore_unreachable``.
3. ``--max-failures N`` is exceeded when failures are strictly more than N, ``P%`` when the
   failed share is strictly more than P %; both are checked after each batch, against the
   batch (its size) and cumulatively (against the targets attempted so far).
4. After a canary batch, a module that no canary target has loaded (rule 1's typo) stops
   the rollout before the next batch.
5. Exit code, first match wins: 130 interrupted; 5 a rollout was aborted (rules 3-4,
   ``--fail-fast``, ``rollout abort``); 4 a target rejected our credentials; 3 a target did
   not answer (unreachable, timeout, not attempted: silence is never success, and never
   "everything failed" either, since what it did is unknown); 0 every record ok; 1 every
   record failed; 3 otherwise (partial).

Before any target is contacted the CLI exits 2 for usage errors and 1 for local problems.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Final

from reloadctl.client.fanout import ANSWERED
from reloadctl.results import (
    AUTH_FAILED,
    NOT_ATTEMPTED,
    NOT_LOADED,
    OK_STATUSES,
    TIMEOUT,
    UNREACHABLE,
    ModuleResult,
)

if TYPE_CHECKING:
    from reloadctl.client.fanout import Outcome
    from reloadctl.client.rollout import Threshold

__all__ = [
    "ExitCode",
    "canary_breach",
    "exceeded",
    "exit_code",
    "modules_loaded_nowhere",
    "record_ok",
    "target_failed",
    "threshold_breach",
    "typo_line",
]


class ExitCode(enum.IntEnum):
    """The process exit codes (rule 5; DESIGN.md "Exit codes")."""

    OK = 0  # every selected target did what was asked
    FAILED = 1  # everything failed, or a local error before any target
    USAGE = 2  # the command line asks for something impossible
    PARTIAL = 3  # some target failed, was refused or did not answer
    AUTH = 4  # a target rejected our credentials
    ABORTED = 5  # a rollout stopped before its later batches
    INTERRUPTED = 130  # Ctrl-C


_SILENT: Final = frozenset({UNREACHABLE, TIMEOUT, NOT_ATTEMPTED})


def modules_loaded_nowhere(outcomes: Sequence[Outcome]) -> list[str]:
    """Requested modules that no target reported loaded, though some target said not_loaded.

    Such a module is usually a typo: its ``not_loaded`` records are not ok (rule 1). A module
    for which no target answered is not in this list (nobody could tell).
    """
    seen: dict[str, bool] = {}  # module -> some target has it loaded (answered otherwise)
    for outcome in outcomes:
        if outcome.status != ANSWERED:
            continue
        for r in outcome.results:
            if r.status == NOT_LOADED:
                seen.setdefault(r.module, False)
            else:
                seen[r.module] = True
    return [m for m, loaded in seen.items() if not loaded]


def typo_line(module: str, where: str = "selected target") -> str:
    """The line a user gets for a module loaded by no ``where`` (rule 1)."""
    return f"{module}: not loaded by any {where} (a typo?); counted as failed"


def record_ok(result: ModuleResult, typos: Collection[str] = ()) -> bool:
    """Rule 1 for one (target, module) record; ``typos``: ``modules_loaded_nowhere(...)``."""
    if result.status == NOT_LOADED:
        return result.module not in typos
    return result.status in OK_STATUSES


def target_failed(
    outcome: Outcome, *, ignore_unreachable: bool = False, typos: Collection[str] = ()
) -> bool:
    """Rule 2: did this target fail, as a rollout counts failures."""
    if not outcome.results:
        return outcome.status not in (ANSWERED, NOT_ATTEMPTED) and not (
            ignore_unreachable and outcome.status == UNREACHABLE
        )
    for r in outcome.results:
        if r.status == NOT_ATTEMPTED or (ignore_unreachable and r.status == UNREACHABLE):
            continue
        if not record_ok(r, typos):
            return True
    return False


def exceeded(failed: int, total: int, *, value: int, percent: bool) -> bool:
    """Rule 3: ``failed`` out of ``total`` is strictly more than ``value`` (a count, or a
    percentage when ``percent``)."""
    if percent:
        return total > 0 and failed * 100 > value * total
    return failed > value


def threshold_breach(
    threshold: Threshold,
    *,
    batch: int,
    failed: int,
    size: int,
    failed_total: int,
    attempted: int,
) -> str:
    """Rule 3 after batch number ``batch``: why the rollout must stop, or "" to go on.

    Args:
        threshold: the ``--max-failures`` value.
        batch: the batch's number (1 for the first).
        failed: targets of this batch that failed (rule 2).
        size: targets in this batch.
        failed_total: failed targets so far, this batch included.
        attempted: targets attempted so far, this batch included.
    """
    if threshold.exceeded(failed, size):
        return (
            f"--max-failures {threshold}: {failed} of {size} targets failed "
            f"in batch {batch}, more than {threshold}"
        )
    if threshold.exceeded(failed_total, attempted):
        return (
            f"--max-failures {threshold}: {failed_total} of {attempted} targets failed "
            f"so far, more than {threshold}"
        )
    return ""


def canary_breach(canary: Sequence[Outcome]) -> str:
    """Rule 4 after the canary batch: why the rollout must stop, or "" to go on."""
    typos = modules_loaded_nowhere(canary)
    if not typos:
        return ""
    return "; ".join(typo_line(m, "canary target") for m in typos)


def exit_code(
    outcomes: Sequence[Outcome],
    *,
    aborted: bool = False,
    interrupted: bool = False,
    typos: Collection[str] = (),
) -> int:
    """The process exit code of a finished command (rule 5).

    Args:
        outcomes: one per selected target.
        aborted: a rollout was aborted.
        interrupted: the user pressed Ctrl-C.
        typos: modules loaded by no selected target (``modules_loaded_nowhere``).
    """
    if interrupted:
        return ExitCode.INTERRUPTED
    if aborted:
        return ExitCode.ABORTED
    if any(o.status == AUTH_FAILED for o in outcomes):
        return ExitCode.AUTH
    if any(o.status in _SILENT for o in outcomes):
        return ExitCode.PARTIAL
    verdicts: list[bool] = []
    for o in outcomes:
        if not o.results:
            verdicts.append(o.status == ANSWERED)
        verdicts.extend(record_ok(r, typos) for r in o.results)
    if all(verdicts):
        return ExitCode.OK
    if not any(verdicts):
        return ExitCode.FAILED
    return ExitCode.PARTIAL
