"""``client.verdict``: ok/failed, thresholds and the exit code, as tables over outcomes."""

from __future__ import annotations

import pytest

from reloadctl.client.fanout import ANSWERED, Outcome
from reloadctl.client.rollout import Threshold
from reloadctl.client.targets import Target
from reloadctl.client.verdict import (
    canary_breach,
    exit_code,
    modules_loaded_nowhere,
    record_ok,
    target_failed,
    threshold_breach,
)
from reloadctl.results import (
    FAILED,
    NOT_ATTEMPTED,
    NOT_LOADED,
    RELOADED,
    UNREACHABLE,
    ModuleResult,
)

A, B = Target("a", "tcp://a:1"), Target("b", "tcp://b:1")


def o(t: Target, *statuses: str, status: str = ANSWERED) -> Outcome:
    mods = ("m", "n")
    return Outcome(t, status, tuple(ModuleResult(m, s) for m, s in zip(mods, statuses)))


CASES = [
    # (outcomes, expected, why)
    ([o(A, "reloaded"), o(B, "unchanged")], 0, "all did what was asked"),
    ([o(A, "reloaded"), o(B, "not_loaded")], 0, "not_loaded while another target has it"),
    ([o(A, "not_loaded"), o(B, "not_loaded")], 1, "loaded nowhere: a typo, all failed"),
    ([o(A, "reloaded", "not_loaded"), o(B, "reloaded", "not_loaded")], 3, "one module a typo"),
    ([o(A, "failed"), o(B, "failed")], 1, "everything failed"),
    ([o(A, "reloaded"), o(B, "failed")], 3, "partial"),
    ([o(A, "reloaded"), o(B, "refused")], 3, "refused is not success"),
    ([o(A, "reloaded"), o(B, "unreachable", status="unreachable")], 3, "silence is not success"),
    ([o(A, "reloaded"), o(B, "timeout", status="timeout")], 3, "timeout is not success"),
    ([o(A, "reloaded"), o(B, "not_attempted", status="not_attempted")], 3, "not attempted"),
    ([o(A, "unreachable", status="unreachable")], 3, "the only target did not answer"),
    ([o(A, "failed"), o(B, "timeout", status="timeout")], 3, "failed and silent: unknown"),
    ([o(A, "reloaded"), o(B, "auth_failed", status="auth_failed")], 4, "auth beats partial"),
    ([o(A, "failed"), o(B, "auth_failed", status="auth_failed")], 4, "auth beats all-failed"),
    ([Outcome(A, ANSWERED), Outcome(B, ANSWERED)], 0, "ping: all answered"),
    ([Outcome(A, ANSWERED), Outcome(B, "timeout")], 3, "ping: one silent"),
]


@pytest.mark.parametrize(("outcomes", "expected", "why"), CASES, ids=[c[2] for c in CASES])
def test_exit_code_table(outcomes: list[Outcome], expected: int, why: str) -> None:
    assert exit_code(outcomes, typos=modules_loaded_nowhere(outcomes)) == expected


def test_precedence_interrupted_then_aborted_then_auth() -> None:
    auth = [o(A, "reloaded"), o(B, "auth_failed", status="auth_failed")]
    assert exit_code(auth, aborted=True) == 5
    assert exit_code(auth, aborted=True, interrupted=True) == 130
    assert exit_code([o(A, "reloaded")], interrupted=True) == 130


def test_modules_loaded_nowhere() -> None:
    t1, t2 = A, B

    def outcome(t: Target, *results: tuple[str, str], status: str = ANSWERED) -> Outcome:
        return Outcome(t, status, tuple(ModuleResult(m, s) for m, s in results))

    assert modules_loaded_nowhere(
        [
            outcome(t1, ("a", NOT_LOADED), ("b", NOT_LOADED), ("c", FAILED)),
            outcome(t2, ("a", RELOADED), ("b", NOT_LOADED), ("c", NOT_LOADED)),
        ]
    ) == ["b"]
    # A target that did not answer says nothing about what is loaded.
    assert modules_loaded_nowhere(
        [
            outcome(t1, ("a", NOT_LOADED)),
            outcome(t2, ("a", UNREACHABLE), status=UNREACHABLE),
        ]
    ) == ["a"]
    assert modules_loaded_nowhere([outcome(t1, ("a", UNREACHABLE), status=UNREACHABLE)]) == []


@pytest.mark.parametrize(
    ("status", "typos", "ok"),
    [
        ("reloaded", (), True),
        ("unchanged", (), True),
        ("not_loaded", (), True),
        ("not_loaded", ("m",), False),  # loaded nowhere: a typo
        ("reloaded", ("m",), True),  # a typo list only concerns not_loaded records
        ("failed", (), False),
        ("refused", (), False),
        ("timeout", (), False),
        ("unreachable", (), False),
        ("auth_failed", (), False),
        ("not_attempted", (), False),
    ],
)
def test_record_ok_table(status: str, typos: tuple[str, ...], ok: bool) -> None:
    assert record_ok(ModuleResult("m", status), typos) is ok


@pytest.mark.parametrize(
    ("outcome", "ignore_unreachable", "typos", "failed"),
    [
        (o(A, "reloaded", "unchanged"), False, (), False),
        (o(A, "reloaded", "failed"), False, (), True),
        (o(A, "refused"), False, (), True),
        (o(A, "not_loaded"), False, (), False),
        (o(A, "not_loaded"), False, ("m",), True),
        (o(A, "unreachable", status="unreachable"), False, (), True),
        (o(A, "unreachable", status="unreachable"), True, (), False),
        (o(A, "timeout", status="timeout"), True, (), True),
        (o(A, "auth_failed", status="auth_failed"), True, (), True),
        (o(A, "not_attempted", status="not_attempted"), False, (), False),
        (Outcome(A, ANSWERED), False, (), False),  # ping answered
        (Outcome(A, UNREACHABLE), False, (), True),  # ping silent
        (Outcome(A, UNREACHABLE), True, (), False),
        (Outcome(A, NOT_ATTEMPTED), False, (), False),
    ],
)
def test_target_failed_table(
    outcome: Outcome, ignore_unreachable: bool, typos: tuple[str, ...], failed: bool
) -> None:
    assert target_failed(outcome, ignore_unreachable=ignore_unreachable, typos=typos) is failed


@pytest.mark.parametrize(
    ("threshold", "batch", "size", "total", "attempted", "expected"),
    [
        (Threshold(1), 1, 5, 1, 5, ""),  # equal is not exceeded
        (Threshold(1), 2, 5, 2, 10, "--max-failures 1: 2 of 5 targets failed in batch 1"),
        (Threshold(1), 1, 2, 2, 4, "--max-failures 1: 2 of 4 targets failed so far"),
        (Threshold(25, percent=True), 1, 4, 1, 4, ""),
        (Threshold(20, percent=True), 1, 4, 1, 4, "--max-failures 20%: 1 of 4 targets failed"),
        (Threshold(0), 0, 3, 0, 3, ""),
    ],
)
def test_threshold_breach_table(
    threshold: Threshold, batch: int, size: int, total: int, attempted: int, expected: str
) -> None:
    why = threshold_breach(
        threshold, batch=1, failed=batch, size=size, failed_total=total, attempted=attempted
    )
    assert why.startswith(expected) and bool(why) is bool(expected)


def test_canary_breach_names_modules_no_canary_target_loaded() -> None:
    assert canary_breach([o(A, "reloaded", "not_loaded"), o(B, "not_loaded", "reloaded")]) == ""
    assert canary_breach([o(A, "reloaded", "not_loaded")]) == (
        "n: not loaded by any canary target (a typo?); counted as failed"
    )
    # a canary that did not answer proves nothing: the threshold rules judge it
    assert canary_breach([o(A, "unreachable", status="unreachable")]) == ""
