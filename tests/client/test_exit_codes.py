"""The exit-code table, decided in one place (``cli.exit_code``)."""

from __future__ import annotations

import pytest

from reloadctl.client.cli import exit_code
from reloadctl.client.fanout import ANSWERED, Outcome, modules_loaded_nowhere
from reloadctl.client.targets import Target
from reloadctl.results import ModuleResult

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
