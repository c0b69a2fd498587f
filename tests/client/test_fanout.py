"""Fan-out with a fake transport: real threads, real timing bounds, one outcome per target."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from fakes import FakeAgent, FakeTransport, refused

from reloadctl.client.fanout import (
    ANSWERED,
    FanoutOptions,
    Outcome,
    run,
)
from reloadctl.client.targets import Target
from reloadctl.errors import (
    RemoteProtocolError,
    TargetAuthFailed,
    TargetTimeout,
    TargetUnreachable,
)
from reloadctl.proto.messages import ReloadRequest, StatusRequest
from reloadctl.results import (
    AUTH_FAILED,
    FAILED,
    NOT_ATTEMPTED,
    REFUSED,
    RELOADED,
    TIMEOUT,
    UNREACHABLE,
    ModuleResult,
)

REQ = ReloadRequest(("shop.pricing", "shop.cart"))


def targets(n: int) -> list[Target]:
    return [Target(f"t{i}", f"tcp://10.0.0.{i}:7878") for i in range(n)]


def test_every_target_gets_one_outcome_in_selection_order() -> None:
    ts = targets(6)
    agents = {
        t.address: FakeAgent(
            {"shop.pricing": RELOADED, "shop.cart": RELOADED}, delay=0.05 * (6 - i)
        )
        for i, t in enumerate(ts)
    }
    seen: list[str] = []
    report = run(
        ts, REQ, transport=FakeTransport(agents), on_outcome=lambda o: seen.append(o.target.name)
    )
    assert [o.target.name for o in report.outcomes] == [t.name for t in ts]
    assert sorted(seen) == sorted(t.name for t in ts)
    # Completion order is streamed, not selection order: the slowest (t0) comes last.
    assert seen[-1] == "t0"
    for o in report.outcomes:
        assert o.status == ANSWERED
        assert [r.module for r in o.results] == ["shop.pricing", "shop.cart"]


def test_parallelism_is_bounded() -> None:
    ts = targets(12)
    fake = FakeTransport({t.address: FakeAgent({"shop.pricing": RELOADED}, delay=0.05) for t in ts})
    started = time.monotonic()
    run(ts, ReloadRequest(("shop.pricing",)), options=FanoutOptions(parallel=3), transport=fake)
    elapsed = time.monotonic() - started
    assert fake.max_active == 3
    assert elapsed >= 4 * 0.05 * 0.9  # 12 targets, 3 at a time: at least 4 rounds


def test_targets_run_concurrently() -> None:
    ts = targets(8)
    fake = FakeTransport({t.address: FakeAgent({"shop.pricing": RELOADED}, delay=0.2) for t in ts})
    started = time.monotonic()
    run(ts, ReloadRequest(("shop.pricing",)), options=FanoutOptions(parallel=8), transport=fake)
    assert time.monotonic() - started < 0.2 * 8 / 2


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (TargetUnreachable("refused"), UNREACHABLE),
        (TargetTimeout("slow"), TIMEOUT),
        (TargetAuthFailed("wrong secret"), AUTH_FAILED),
        (refused(), REFUSED),
        (RemoteProtocolError("garbage"), FAILED),
        (RuntimeError("transport bug"), FAILED),
    ],
)
def test_transport_errors_become_per_module_statuses(exc: Exception, status: str) -> None:
    (t,) = targets(1)
    report = run([t], REQ, transport=FakeTransport({t.address: FakeAgent(raises=exc)}))
    (o,) = report.outcomes
    assert o.status == status
    assert [(r.module, r.status) for r in o.results] == [
        ("shop.pricing", status),
        ("shop.cart", status),
    ]
    assert o.error is not None and o.error.type == type(exc).__name__
    assert all(r.error == o.error for r in o.results)


def test_missing_results_are_failed_and_extra_results_kept() -> None:
    (t,) = targets(1)
    extra = ModuleResult("shop.views", RELOADED)
    agent = FakeAgent({"shop.pricing": RELOADED}, drop=("shop.cart",), extra=(extra,))
    (o,) = run([t], REQ, transport=FakeTransport({t.address: agent})).outcomes
    assert [(r.module, r.status) for r in o.results] == [
        ("shop.pricing", RELOADED),
        ("shop.cart", FAILED),
        ("shop.views", RELOADED),
    ]
    assert o.results[1].error is not None and o.results[1].error.type == "MissingResult"


def test_wrong_reply_type_is_failed() -> None:
    (t,) = targets(1)

    def transport(address: str, request: object, **kw: object) -> object:
        return ("not", "results")

    (o,) = run([t], REQ, transport=transport).outcomes  # type: ignore[arg-type]
    assert o.status == FAILED
    assert o.error is not None and o.error.type == "RemoteProtocolError"


def test_status_request_returns_agent_info() -> None:
    (t,) = targets(1)
    (o,) = run([t], StatusRequest(), transport=FakeTransport({t.address: FakeAgent()})).outcomes
    assert o.status == ANSWERED and o.info is not None and o.info.pid == 4242
    assert o.results == ()


def test_target_with_problem_is_unreachable_without_a_call() -> None:
    t = Target("ghost.invalid", "tcp://ghost.invalid:7878", problem="cannot resolve host")
    fake = FakeTransport({})
    (o,) = run([t], REQ, transport=fake).outcomes
    assert o.status == UNREACHABLE and fake.calls == []
    assert o.error is not None and o.error.message == "cannot resolve host"


def test_hanging_transport_is_abandoned_within_its_budget() -> None:
    ts = targets(2)
    hang = threading.Event()
    agents = {
        ts[0].address: FakeAgent({"shop.pricing": RELOADED}, block=hang, block_max=5),
        ts[1].address: FakeAgent({"shop.pricing": RELOADED}),
    }
    opts = FanoutOptions(connect_timeout=0.1, timeout=0.2, grace=0.1)
    started = time.monotonic()
    try:
        report = run(
            ts, ReloadRequest(("shop.pricing",)), options=opts, transport=FakeTransport(agents)
        )
    finally:
        hang.set()
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 1.5
    assert report.outcomes[0].status == TIMEOUT
    assert report.outcomes[1].status == ANSWERED


def _fanout_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("reloadctl-fanout-")]


def _wait_no_fanout_threads(timeout: float = 5.0) -> list[threading.Thread]:
    end = time.monotonic() + timeout
    while _fanout_threads() and time.monotonic() < end:
        time.sleep(0.01)
    return _fanout_threads()


def test_a_worker_stuck_in_an_abandoned_call_is_replaced() -> None:
    # parallel=1: the only worker hangs on t0; t1 and t2 still run (on a new worker) and
    # answer, so a hung transport costs one thread, never the rest of the run.
    ts = targets(3)
    hang = threading.Event()
    agents = {t.address: FakeAgent({"shop.pricing": RELOADED}) for t in ts}
    agents[ts[0].address] = FakeAgent({"shop.pricing": RELOADED}, block=hang, block_max=5)
    fake = FakeTransport(agents)
    opts = FanoutOptions(parallel=1, connect_timeout=0.1, timeout=0.2, grace=0.1)
    try:
        report = run(ts, ReloadRequest(("shop.pricing",)), options=opts, transport=fake)
        assert [o.status for o in report.outcomes] == [TIMEOUT, ANSWERED, ANSWERED]
    finally:
        hang.set()
    assert _wait_no_fanout_threads() == []  # the stuck worker ends once its call returns
    assert fake.max_active == 2  # the hung call and one replacement, never more


def test_workers_are_reused_and_end_after_the_run() -> None:
    ts = targets(40)
    agents = {t.address: FakeAgent({"shop.pricing": RELOADED}, delay=0.005) for t in ts}
    fake = FakeTransport(agents)
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    threading.Thread.start = counting_start  # type: ignore[method-assign]
    try:
        report = run(
            ts, ReloadRequest(("shop.pricing",)), options=FanoutOptions(parallel=4), transport=fake
        )
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
    assert all(o.status == ANSWERED for o in report.outcomes)
    assert len(fake.calls) == 40
    assert 1 <= len([n for n in started if n.startswith("reloadctl-fanout-")]) <= 4
    assert _wait_no_fanout_threads() == []


def test_timeouts_are_passed_to_the_transport_and_clipped_by_the_deadline() -> None:
    (t,) = targets(1)
    fake = FakeTransport({t.address: FakeAgent({"shop.pricing": RELOADED})})
    opts = FanoutOptions(connect_timeout=1.5, timeout=20.0, deadline=3.0)
    run([t], ReloadRequest(("shop.pricing",)), options=opts, transport=fake)
    (_, _, connect_timeout, timeout) = fake.calls[0]
    assert connect_timeout == 1.5
    assert 2.5 < timeout <= 3.0


def test_global_deadline_times_out_in_flight_and_skips_the_rest() -> None:
    ts = targets(4)
    hang = threading.Event()
    agents = {t.address: FakeAgent({"m": RELOADED}, block=hang, block_max=5) for t in ts}
    opts = FanoutOptions(parallel=2, timeout=10, deadline=0.3)
    started = time.monotonic()
    try:
        report = run(ts, ReloadRequest(("m",)), options=opts, transport=FakeTransport(agents))
    finally:
        hang.set()
    assert time.monotonic() - started < 1.0
    assert report.deadline_hit
    assert [o.status for o in report.outcomes] == [TIMEOUT, TIMEOUT, NOT_ATTEMPTED, NOT_ATTEMPTED]


def test_cancel_stops_scheduling_and_lets_in_flight_finish() -> None:
    ts = targets(5)
    cancel = threading.Event()
    agents = {t.address: FakeAgent({"m": RELOADED}, delay=0.1) for t in ts}

    def on_outcome(o: Outcome) -> None:
        cancel.set()  # e.g. --fail-fast after the first outcome

    report = run(
        ts,
        ReloadRequest(("m",)),
        options=FanoutOptions(parallel=2),
        transport=FakeTransport(agents),
        on_outcome=on_outcome,
        cancel=cancel,
    )
    statuses = [o.status for o in report.outcomes]
    assert statuses[:2] == [ANSWERED, ANSWERED]  # in flight when cancelled: finished
    assert statuses[2:] == [NOT_ATTEMPTED] * 3
    assert report.cancelled and not report.interrupted
    assert all(r.status == NOT_ATTEMPTED for o in report.outcomes[2:] for r in o.results)


def test_ctrl_c_marks_the_rest_not_attempted() -> None:
    ts = targets(4)
    hang = threading.Event()
    agents = {
        ts[0].address: FakeAgent({"m": RELOADED}, delay=0.05),
        ts[1].address: FakeAgent({"m": RELOADED}, block=hang, block_max=5),
        ts[2].address: FakeAgent({"m": RELOADED}),
        ts[3].address: FakeAgent({"m": RELOADED}),
    }
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        report = run(
            ts,
            ReloadRequest(("m",)),
            options=FanoutOptions(parallel=2, interrupt_grace=0.3),
            transport=FakeTransport(agents),
        )
    finally:
        timer.cancel()
        hang.set()
    assert report.interrupted
    assert time.monotonic() - started < 2.0
    statuses = [o.status for o in report.outcomes]
    # t0 finished, t1 hung through the grace period, t2 (started when t0 finished) either
    # finished at once or was in flight; t3 was never started.
    assert statuses[0] == ANSWERED
    assert statuses[1] == TIMEOUT
    assert statuses[3] in (NOT_ATTEMPTED, ANSWERED)
    assert NOT_ATTEMPTED in statuses or statuses[2:] == [ANSWERED, ANSWERED]


def test_ctrl_c_while_an_outcome_is_handled_keeps_the_records() -> None:
    """A Ctrl-C that lands outside the wait (here: in on_outcome, where the CLI prints) is
    counted, not raised: the answered target keeps its record, the rest are not_attempted."""
    ts = targets(3)
    agents = {t.address: FakeAgent({"m": RELOADED}, delay=0.05 * i) for i, t in enumerate(ts)}

    def press_ctrl_c(outcome: Outcome) -> None:
        if outcome.target is ts[0]:
            os.kill(os.getpid(), signal.SIGINT)

    report = run(
        ts,
        ReloadRequest(("m",)),
        options=FanoutOptions(parallel=1, interrupt_grace=0.3),
        transport=FakeTransport(agents),
        on_outcome=press_ctrl_c,
    )
    assert report.interrupted
    assert [o.status for o in report.outcomes] == [ANSWERED, NOT_ATTEMPTED, NOT_ATTEMPTED]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="parallel"):
        FanoutOptions(parallel=0)
    with pytest.raises(ValueError, match="deadline"):
        FanoutOptions(deadline=0)
