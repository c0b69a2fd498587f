"""Rollouts: fixed batches (canary first), failure thresholds, pause/resume, abort reporting.

Rules:
1. Batches take targets in selection order: ``--canary N`` first, then the ``--batch`` sizes
   in turn (``1,5,25%``; the last size repeats until every target is done; a percentage is
   of all selected targets, at least 1). Without ``--batch``, everything after the canary is
   one batch. A batch boundary is a gate: the next batch starts only after every target of
   the previous one has an outcome.
2. Whether a target failed, and whether ``--max-failures`` is exceeded (per batch and
   cumulatively, after each batch), is decided by ``client.verdict`` (its rules 2-3).
3. After the canary, a module that no canary target has loaded (a typo, usually) stops the
   rollout before the next batch (``verdict`` rule 4).
4. ``--fail-fast`` stops scheduling at the first failed target (targets in flight finish)
   and aborts the rollout.
5. On abort every target not attempted gets ``not_attempted`` records, and the report says
   which rule fired; targets already changed are listed for the rollback command.
6. ``--pause`` stops after the first batch (the canary) while more remain: the state file
   ``<socket dir>/rollouts/<id>.json`` says ``paused`` until ``reloadctl rollout resume ID``
   (or ``abort ID``) rewrites it; the waiting process polls it. The file is removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from reloadctl.client.fanout import FanoutReport, Outcome, unanswered
from reloadctl.client.verdict import canary_breach, exceeded, target_failed, threshold_breach
from reloadctl.errors import ConfigError
from reloadctl.proto.messages import ReloadRequest, RollbackRequest, StatusRequest
from reloadctl.results import NOT_ATTEMPTED, RELOADED, ErrorInfo

__all__ = [
    "RolloutPlan",
    "RolloutReport",
    "Size",
    "Threshold",
    "abort_rollout",
    "batch_sizes",
    "parse_sizes",
    "parse_threshold",
    "resume_rollout",
    "rollback_command",
    "rollout_dir",
    "run_rollout",
]

PAUSED: Final = "paused"
RESUMED: Final = "resumed"
ABORTED: Final = "aborted"
_ID_BYTES: Final = 4

Request = ReloadRequest | RollbackRequest | StatusRequest

if TYPE_CHECKING:
    from reloadctl.client.targets import Target

    #: Runs one batch: ``(targets, cancel, on_outcome) -> FanoutReport`` (fanout.run, bound).
    BatchRunner = Callable[
        [Sequence[Target], threading.Event, Callable[[Outcome], None]], FanoutReport
    ]


@dataclass(frozen=True, slots=True)
class Size:
    """A batch size: a count, or a percentage of all targets."""

    value: int
    percent: bool = False

    def of(self, total: int) -> int:
        """The number of targets this size means out of ``total`` (at least 1)."""
        return max(1, total * self.value // 100) if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


@dataclass(frozen=True, slots=True)
class Threshold:
    """``--max-failures``: a count or a percentage to exceed strictly (``verdict`` rule 3)."""

    value: int
    percent: bool = False

    def exceeded(self, failed: int, total: int) -> bool:
        """True when ``failed`` out of ``total`` is strictly more than the threshold."""
        return exceeded(failed, total, value=self.value, percent=self.percent)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


def _number(text: str, what: str) -> tuple[int, bool]:
    raw = text.strip()
    percent = raw.endswith("%")
    digits = raw[:-1].strip() if percent else raw
    if not digits.isdigit():
        raise ValueError(f"{what}: {text!r} is not a number or a percentage like 25%")
    value = int(digits)
    if percent and not 0 <= value <= 100:
        raise ValueError(f"{what}: {text!r} is not a percentage between 0 and 100")
    return value, percent


def parse_sizes(text: str) -> tuple[Size, ...]:
    """Parse ``--batch`` (``"1,5,25%"``).

    Raises:
        ValueError: a part is not a positive count or a percentage in 1-100.
    """
    sizes = []
    for part in text.split(","):
        value, percent = _number(part, "--batch")
        if value < 1:
            raise ValueError(f"--batch: sizes must be at least 1, not {part.strip()!r}")
        sizes.append(Size(value, percent))
    return tuple(sizes)


def parse_threshold(text: str) -> Threshold:
    """Parse ``--max-failures`` (``"2"`` or ``"10%"``).

    Raises:
        ValueError: not a count >= 0 or a percentage 0-100.
    """
    value, percent = _number(text, "--max-failures")
    return Threshold(value, percent)


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """How to roll a request out over the selection (module docstring, rules 1-6)."""

    canary: int = 0
    batches: tuple[Size, ...] = ()
    max_failures: Threshold | None = None
    fail_fast: bool = False
    ignore_unreachable: bool = False
    pause: bool = False


def batch_sizes(total: int, plan: RolloutPlan) -> list[int]:
    """The size of each batch for ``total`` targets (rule 1); they sum to ``total``."""
    sizes: list[int] = []
    remaining = total
    if plan.canary > 0 and remaining > 0:
        sizes.append(min(plan.canary, remaining))
        remaining -= sizes[-1]
    specs = plan.batches or (Size(100, percent=True),)
    i = 0
    while remaining > 0:
        size = min(specs[min(i, len(specs) - 1)].of(total), remaining)
        sizes.append(size)
        remaining -= size
        i += 1
    return sizes


@dataclass(frozen=True, slots=True)
class RolloutReport:
    """Every outcome (selection order), the rollout id, and why it stopped early if it did."""

    outcomes: tuple[Outcome, ...]
    rollout_id: str
    batches_run: int
    aborted: str = ""  # the rule that fired, "" when not aborted
    interrupted: bool = False

    @property
    def changed(self) -> tuple[Target, ...]:
        """Targets where at least one module was reloaded (what a rollback would undo)."""
        return tuple(
            o.target for o in self.outcomes if any(r.status == RELOADED for r in o.results)
        )


def rollout_dir() -> Path:
    """Where rollout state files live: ``<agent socket dir>/rollouts`` (private, 0700)."""
    from reloadctl.proto.address import default_socket_dir

    return default_socket_dir() / "rollouts"


def _write_state(path: Path, state: dict[str, object]) -> None:
    # mkdir(parents=True) would make missing parents with the umask's mode; the socket
    # directory must be 0700 or agents refuse it, so each level is made explicitly.
    for directory in (path.parent.parent, path.parent):
        directory.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)  # atomic: the poller never reads half a file


def _read_state(path: Path) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _set_state(rollout_id: str, new: str, directory: Path | None) -> None:
    if not rollout_id.isalnum():
        raise ConfigError(f"invalid rollout id {rollout_id!r}")
    path = (directory or rollout_dir()) / f"{rollout_id}.json"
    state = _read_state(path)
    if state is None:
        raise ConfigError(f"no rollout {rollout_id} is waiting (looked for {path})")
    if state.get("state") != PAUSED:
        raise ConfigError(f"rollout {rollout_id} is not paused (it is {state.get('state')!r})")
    state["state"] = new
    _write_state(path, state)


def resume_rollout(rollout_id: str, directory: Path | None = None) -> None:
    """Let the paused rollout ``rollout_id`` go on (``reloadctl rollout resume ID``).

    Raises:
        ConfigError: no such paused rollout.
    """
    _set_state(rollout_id, RESUMED, directory)


def abort_rollout(rollout_id: str, directory: Path | None = None) -> None:
    """Abort the paused rollout ``rollout_id`` (``reloadctl rollout abort ID``).

    Raises:
        ConfigError: no such paused rollout.
    """
    _set_state(rollout_id, ABORTED, directory)


def _wait_paused(path: Path, poll: float) -> str:
    """Block until the state file leaves ``paused``; returns the new state."""
    while True:
        state = _read_state(path)
        if state is None:
            return ABORTED  # someone removed it: treat as an abort, never as a go-ahead
        value = state.get("state")
        if value != PAUSED and isinstance(value, str):
            return value
        time.sleep(poll)


def run_rollout(
    targets: Sequence[Target],
    request: Request,
    *,
    plan: RolloutPlan,
    run_batch: BatchRunner,
    on_outcome: Callable[[Outcome], None],
    on_event: Callable[[str], None],
    notify: Callable[[str], None] | None = None,
    state_dir: Path | None = None,
    rollout_id: str | None = None,
    poll_interval: float = 0.2,
) -> RolloutReport:
    """Run ``request`` over ``targets`` batch by batch (rules 1-6).

    Args:
        targets: the selection, in order.
        request: what every target gets.
        plan: canary, batches, thresholds, pause.
        run_batch: runs one batch concurrently (``fanout.run`` with options bound).
        on_outcome: every outcome, as it is known (including ``not_attempted`` ones).
        on_event: one-line progress messages (batch starts, resumed).
        notify: messages a user must see even with ``-q``: how to resume a paused rollout,
            and the rule that aborted it (default: ``on_event``).
        state_dir: where the pause state file lives (default ``rollout_dir()``).
        rollout_id: the id (default: random hex).
        poll_interval: how often a paused rollout reads its state file, in seconds.
    """
    tell = notify or on_event
    rid = rollout_id or os.urandom(_ID_BYTES).hex()  # not `secrets`: 4 ms of imports
    sizes = batch_sizes(len(targets), plan)
    staged = len(sizes) > 1
    outcomes: list[Outcome] = []
    attempted = failed_total = 0
    aborted = ""
    interrupted = False
    position = 0
    batches_run = 0
    state_path = (state_dir or rollout_dir()) / f"{rid}.json"
    try:
        for number, size in enumerate(sizes, start=1):
            batch = targets[position : position + size]
            position += size
            if staged:
                label = "canary" if number == 1 and plan.canary else f"batch {number}"
                on_event(f"rollout {rid}: {label}: {len(batch)} of {len(targets)} targets")
            cancel = threading.Event()

            def take(outcome: Outcome, cancel: threading.Event = cancel) -> None:
                if plan.fail_fast and target_failed(
                    outcome, ignore_unreachable=plan.ignore_unreachable
                ):
                    cancel.set()
                on_outcome(outcome)

            report = run_batch(batch, cancel, take)
            batches_run += 1
            outcomes.extend(report.outcomes)
            done = [o for o in report.outcomes if o.status != NOT_ATTEMPTED]
            failed = [
                o for o in done if target_failed(o, ignore_unreachable=plan.ignore_unreachable)
            ]
            attempted += len(done)
            failed_total += len(failed)
            if report.interrupted:
                interrupted = True
                break
            if plan.fail_fast and failed:
                aborted = f"--fail-fast: {failed[0].target.name} failed in batch {number}"
            elif plan.max_failures is not None:
                aborted = threshold_breach(
                    plan.max_failures,
                    batch=number,
                    failed=len(failed),
                    size=len(batch),
                    failed_total=failed_total,
                    attempted=attempted,
                )
            if not aborted and plan.canary and number == 1 and position < len(targets):
                aborted = canary_breach(report.outcomes)
            if aborted:
                break
            if plan.pause and number == 1 and position < len(targets):
                _write_state(
                    state_path,
                    {"id": rid, "state": PAUSED, "pid": os.getpid(), "created": time.time()},
                )
                tell(
                    f"rollout {rid} paused after the first batch; "
                    f"continue with: reloadctl rollout resume {rid} "
                    f"(or stop it with: reloadctl rollout abort {rid})"
                )
                try:
                    decision = _wait_paused(state_path, poll_interval)
                except KeyboardInterrupt:
                    interrupted = True
                    break
                if decision != RESUMED:
                    aborted = f"rollout {rid} aborted while paused"
                    break
                on_event(f"rollout {rid} resumed")
    finally:
        with contextlib.suppress(OSError):
            state_path.unlink()
    if position < len(targets) or len(outcomes) < len(targets):
        why = aborted or ("interrupted" if interrupted else "not attempted")
        for target in targets[len(outcomes) :]:
            error = ErrorInfo("NotAttempted", f"rollout stopped: {why}")
            outcome = unanswered(target, request, NOT_ATTEMPTED, error)
            outcomes.append(outcome)
            on_outcome(outcome)
    if aborted:
        tell(f"rollout {rid} aborted: {aborted}")
    return RolloutReport(tuple(outcomes), rid, batches_run, aborted, interrupted)


def rollback_command(
    targets: Sequence[Target], modules: Sequence[str], prefix: Sequence[str] = ()
) -> str:
    """The exact ``reloadctl rollback`` command for ``targets`` (by address) and ``modules``."""
    argv = ["reloadctl", *prefix, "rollback"]
    for t in targets:
        argv += ["-H", t.address]
    argv += list(modules)
    return shlex.join(argv)
