"""Rollouts over the real fan-out with a fake transport: batches, thresholds, pause/resume."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from fakes import FakeAgent, FakeTransport

from reloadctl.client import fanout
from reloadctl.client.fanout import FanoutOptions, Outcome
from reloadctl.client.rollout import (
    RolloutPlan,
    Size,
    Threshold,
    abort_rollout,
    batch_sizes,
    parse_sizes,
    parse_threshold,
    resume_rollout,
    rollback_command,
    run_rollout,
)
from reloadctl.client.targets import Target
from reloadctl.errors import ConfigError
from reloadctl.proto.messages import ReloadRequest
from reloadctl.results import FAILED, RELOADED

REQ = ReloadRequest(("m",))


@pytest.mark.parametrize(
    ("total", "plan", "expected"),
    [
        (10, RolloutPlan(), [10]),
        (10, RolloutPlan(canary=1), [1, 9]),
        (10, RolloutPlan(canary=1, batches=(Size(2),)), [1, 2, 2, 2, 2, 1]),
        (20, RolloutPlan(batches=parse_sizes("1,5,25%")), [1, 5, 5, 5, 4]),
        (3, RolloutPlan(canary=5), [3]),
        (3, RolloutPlan(batches=(Size(10, percent=True),)), [1, 1, 1]),
        (0, RolloutPlan(canary=1), []),
    ],
)
def test_batch_sizes(total: int, plan: RolloutPlan, expected: list[int]) -> None:
    assert batch_sizes(total, plan) == expected


@pytest.mark.parametrize(
    ("threshold", "failed", "total", "exceeded"),
    [
        ("1", 1, 5, False),  # equal is not exceeded (Ansible#32255)
        ("1", 2, 5, True),
        ("0", 1, 5, True),
        ("20%", 1, 5, False),
        ("20%", 2, 5, True),
        ("0%", 1, 100, True),
        ("100%", 5, 5, False),
    ],
)
def test_threshold_strictly_exceeded(
    threshold: str, failed: int, total: int, exceeded: bool
) -> None:
    assert parse_threshold(threshold).exceeded(failed, total) is exceeded


@pytest.mark.parametrize("bad", ["", "x", "0", "-1", "101%", "5%%", "1,,2"])
def test_bad_batch_specs(bad: str) -> None:
    with pytest.raises(ValueError, match="--batch"):
        parse_sizes(bad)


def setup(
    statuses: Sequence[str], delay: float = 0.0
) -> tuple[list[Target], FakeTransport, Callable[..., fanout.FanoutReport]]:
    ts = [Target(f"t{i}", f"tcp://10.0.0.{i}:7878") for i in range(len(statuses))]
    fake = FakeTransport(
        {t.address: FakeAgent({"m": s}, delay=delay) for t, s in zip(ts, statuses)}
    )

    def run_batch(
        batch: Sequence[Target], cancel: threading.Event, take: Callable[[Outcome], None]
    ) -> fanout.FanoutReport:
        return fanout.run(
            batch,
            REQ,
            options=FanoutOptions(parallel=1),
            transport=fake,
            on_outcome=take,
            cancel=cancel,
        )

    return ts, fake, run_batch


def rollout(statuses: Sequence[str], plan: RolloutPlan, tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    ts, fake, run_batch = setup(statuses, **kw)  # type: ignore[arg-type]
    events: list[str] = []
    streamed: list[Outcome] = []
    report = run_rollout(
        ts,
        REQ,
        plan=plan,
        run_batch=run_batch,
        on_outcome=streamed.append,
        on_event=events.append,
        state_dir=tmp_path,
    )
    assert len(streamed) == len(ts)  # every target streamed exactly once
    return report, fake, events


def test_all_good_runs_every_batch(tmp_path: Path) -> None:
    report, fake, events = rollout(
        [RELOADED] * 6, RolloutPlan(canary=1, batches=(Size(2),)), tmp_path
    )
    assert not report.aborted and report.batches_run == 4
    assert [o.results[0].status for o in report.outcomes] == [RELOADED] * 6
    assert [c[0] for c in fake.calls] == [f"tcp://10.0.0.{i}:7878" for i in range(6)]
    assert events[0].endswith("canary: 1 of 6 targets")


def test_canary_failure_aborts_and_nothing_else_is_attempted(tmp_path: Path) -> None:
    plan = RolloutPlan(canary=1, max_failures=Threshold(0))
    report, fake, events = rollout([FAILED, RELOADED, RELOADED], plan, tmp_path)
    assert report.aborted == "--max-failures 0: 1 of 1 targets failed in batch 1, more than 0"
    assert len(fake.calls) == 1
    assert [o.status for o in report.outcomes][1:] == ["not_attempted", "not_attempted"]
    assert report.changed == ()
    assert any("aborted" in e for e in events)


def test_cumulative_threshold(tmp_path: Path) -> None:
    # Batches of 2, max 1 failure: batch 1 has 1 (not exceeded), batch 2 has 1 (not exceeded
    # per batch) but 2 in total exceeds 1: abort before batch 3.
    plan = RolloutPlan(batches=(Size(2),), max_failures=Threshold(1))
    report, fake, _ = rollout(
        [RELOADED, FAILED, FAILED, RELOADED, RELOADED, RELOADED], plan, tmp_path
    )
    assert report.aborted == "--max-failures 1: 2 of 4 targets failed so far, more than 1"
    assert len(fake.calls) == 4
    assert [t.name for t in report.changed] == ["t0", "t3"]


def test_percentage_threshold_per_batch(tmp_path: Path) -> None:
    plan = RolloutPlan(batches=(Size(4),), max_failures=Threshold(25, percent=True))
    report, _, _ = rollout([RELOADED, RELOADED, RELOADED, FAILED] + [RELOADED] * 4, plan, tmp_path)
    assert not report.aborted  # 1 of 4 = 25 %: not more than 25 %
    plan = RolloutPlan(batches=(Size(4),), max_failures=Threshold(20, percent=True))
    report, _, _ = rollout([RELOADED, RELOADED, RELOADED, FAILED] + [RELOADED] * 4, plan, tmp_path)
    assert report.aborted.startswith("--max-failures 20%: 1 of 4 targets failed in batch 1")


def test_unreachable_counts_unless_ignored(tmp_path: Path) -> None:
    ts, fake, run_batch = setup([RELOADED, RELOADED, RELOADED])
    del fake.agents[ts[0].address]  # unreachable
    for ignore, aborted in ((False, True), (True, False)):
        report = run_rollout(
            ts,
            REQ,
            plan=RolloutPlan(canary=1, max_failures=Threshold(0), ignore_unreachable=ignore),
            run_batch=run_batch,
            on_outcome=lambda o: None,
            on_event=lambda e: None,
            state_dir=tmp_path,
        )
        assert bool(report.aborted) is aborted


def test_fail_fast_stops_scheduling(tmp_path: Path) -> None:
    report, fake, _ = rollout(
        [RELOADED, FAILED, RELOADED, RELOADED], RolloutPlan(fail_fast=True), tmp_path
    )
    assert report.aborted == "--fail-fast: t1 failed in batch 1"
    assert len(fake.calls) == 2  # parallel=1: nothing started after t1
    assert [o.status for o in report.outcomes][2:] == ["not_attempted", "not_attempted"]


def test_pause_waits_for_resume(tmp_path: Path) -> None:
    ts, fake, run_batch = setup([RELOADED] * 3)
    events: list[str] = []
    result: list[object] = []

    def go() -> None:
        result.append(
            run_rollout(
                ts,
                REQ,
                plan=RolloutPlan(canary=1, pause=True),
                run_batch=run_batch,
                on_outcome=lambda o: None,
                on_event=events.append,
                state_dir=tmp_path,
                rollout_id="abc123",
                poll_interval=0.02,
            )
        )

    thread = threading.Thread(target=go)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not (tmp_path / "abc123.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert len(fake.calls) == 1 and not result  # paused after the canary
        assert any("reloadctl rollout resume abc123" in e for e in events)
        with pytest.raises(ConfigError, match="no rollout nope"):
            resume_rollout("nope", tmp_path)
        resume_rollout("abc123", tmp_path)
    finally:
        thread.join(5)
    (report,) = result
    assert len(fake.calls) == 3 and not report.aborted  # type: ignore[attr-defined]
    assert not (tmp_path / "abc123.json").exists()


def test_pause_then_abort(tmp_path: Path) -> None:
    ts, fake, run_batch = setup([RELOADED] * 3)
    result: list[object] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_rollout(
                ts,
                REQ,
                plan=RolloutPlan(canary=1, pause=True),
                run_batch=run_batch,
                on_outcome=lambda o: None,
                on_event=lambda e: None,
                state_dir=tmp_path,
                rollout_id="def456",
                poll_interval=0.02,
            )
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not (tmp_path / "def456.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        abort_rollout("def456", tmp_path)
    finally:
        thread.join(5)
    (report,) = result
    assert report.aborted == "rollout def456 aborted while paused"  # type: ignore[attr-defined]
    assert len(fake.calls) == 1


def test_rollback_command_is_exact() -> None:
    ts = [Target("a", "tcp://10.0.0.1:7878"), Target("b b", "unix:///run/my dir/x.sock")]
    assert (
        rollback_command(ts, ["shop.pricing", "shop.cart"], ["--secret-file", "/s"])
        == "reloadctl --secret-file /s rollback -H tcp://10.0.0.1:7878 "
        "-H 'unix:///run/my dir/x.sock' shop.pricing shop.cart"
    )


def test_state_directory_is_private(tmp_path: Path) -> None:
    ts, _, run_batch = setup([RELOADED] * 2)
    state_dir = tmp_path / "reloadctl" / "rollouts"
    thread = threading.Thread(
        target=run_rollout,
        args=(ts, REQ),
        kwargs={
            "plan": RolloutPlan(canary=1, pause=True),
            "run_batch": run_batch,
            "on_outcome": lambda o: None,
            "on_event": lambda e: None,
            "state_dir": state_dir,
            "rollout_id": "aa11",
            "poll_interval": 0.02,
        },
    )
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not (state_dir / "aa11.json").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (state_dir.parent.stat().st_mode & 0o777) == 0o700
        assert (state_dir.stat().st_mode & 0o777) == 0o700
    finally:
        abort_rollout("aa11", state_dir)
        thread.join(5)


def test_a_module_no_canary_target_loaded_stops_the_rollout(tmp_path: Path) -> None:
    ts, fake, _ = setup([RELOADED] * 4)
    typo = ReloadRequest(("m", "mx"))  # mx: loaded nowhere, a typo

    def run_batch(
        batch: Sequence[Target], cancel: threading.Event, take: Callable[[Outcome], None]
    ) -> fanout.FanoutReport:
        return fanout.run(batch, typo, transport=fake, on_outcome=take, cancel=cancel)

    events: list[str] = []
    report = run_rollout(
        ts,
        typo,
        plan=RolloutPlan(canary=1, batches=(Size(1),)),
        run_batch=run_batch,
        on_outcome=lambda o: None,
        on_event=events.append,
        state_dir=tmp_path,
    )
    assert report.aborted == "mx: not loaded by any canary target (a typo?); counted as failed"
    assert len(fake.calls) == 1 and report.batches_run == 1  # the canary only
    assert [o.status for o in report.outcomes][1:] == ["not_attempted"] * 3
    assert [t.name for t in report.changed] == ["t0"]  # m was reloaded on the canary
    assert any("aborted: mx: not loaded by any canary target" in e for e in events)
    # without a canary the first batch is not taken as representative: everything runs
    ts, fake, _ = setup([RELOADED] * 4)
    report = run_rollout(
        ts,
        typo,
        plan=RolloutPlan(batches=(Size(1),)),
        run_batch=run_batch,
        on_outcome=lambda o: None,
        on_event=events.append,
        state_dir=tmp_path,
    )
    assert not report.aborted and len(fake.calls) == 4
