"""The auth-failure rate limiter: token buckets per host, refill, lockout, bounded memory."""

from __future__ import annotations

import threading

import pytest

from reloadctl.agent.ratelimit import AuthFailureLimiter

# Each case: (burst, refill per s, max hosts, steps, expected answers). A step is
# ("fail", host) -> whether that failure starts a lockout, ("allowed", host) -> whether the
# host may try now, or ("wait", seconds) -> None.
CASES = [
    pytest.param(
        2,
        1.0,
        10,
        [("fail", "a"), ("fail", "a"), ("allowed", "a"), ("allowed", "b")],
        [False, True, False, True],
        id="the burst spent locks the host out, and only that host",
    ),
    pytest.param(
        2,
        1.0,
        10,
        [("fail", "a"), ("fail", "a"), ("fail", "a"), ("allowed", "a")],
        [False, True, False, False],
        id="a lockout starts once, not at every later failure",
    ),
    pytest.param(
        2,
        1.0,
        10,
        [
            ("fail", "a"),
            ("fail", "a"),
            ("wait", 0.5),
            ("allowed", "a"),
            ("wait", 0.5),
            ("allowed", "a"),
        ],
        [False, True, None, False, None, True],
        id="a token comes back after 1/refill seconds",
    ),
    pytest.param(
        2,
        4.0,
        10,
        [
            ("fail", "a"),
            ("fail", "a"),
            ("wait", 0.25),
            ("allowed", "a"),
            ("fail", "a"),
            ("allowed", "a"),
        ],
        [False, True, None, True, True, False],
        id="a refilled token spent again starts a new lockout",
    ),
    pytest.param(
        3,
        1.0,
        10,
        [("fail", "a"), ("wait", 100.0), ("fail", "a"), ("fail", "a"), ("allowed", "a")],
        [False, None, False, False, True],
        id="a bucket never holds more than the burst",
    ),
    pytest.param(
        1,
        1.0,
        10,
        [("allowed", "never-failed"), ("fail", "x"), ("allowed", "x")],
        [True, True, False],
        id="hosts that never failed are always allowed; burst 1 locks out at once",
    ),
]


@pytest.mark.parametrize(("burst", "refill", "max_hosts", "steps", "expected"), CASES)
def test_rate_limiter_table(
    burst: int,
    refill: float,
    max_hosts: int,
    steps: list[tuple[str, object]],
    expected: list[bool | None],
) -> None:
    now = [0.0]
    limiter = AuthFailureLimiter(
        burst=burst, refill_per_s=refill, max_hosts=max_hosts, clock=lambda: now[0]
    )
    answers: list[bool | None] = []
    for step, arg in steps:
        if step == "wait":
            now[0] += float(arg)  # type: ignore[arg-type]
            answers.append(None)
        elif step == "fail":
            answers.append(limiter.failed(str(arg)))
        else:
            answers.append(limiter.allowed(str(arg)))
    assert answers == expected


def test_memory_is_bounded_and_the_most_spent_hosts_are_kept() -> None:
    now = [0.0]
    limiter = AuthFailureLimiter(burst=3, refill_per_s=0.001, max_hosts=10, clock=lambda: now[0])
    for _ in range(3):
        limiter.failed("attacker")  # locked out
    for i in range(100):
        limiter.failed(f"host{i}")  # one failure each: the swarm
    assert not limiter.allowed("attacker")  # the most spent bucket survived the pruning
    assert sum(limiter.allowed(f"host{i}") for i in range(100)) == 100


def test_concurrent_failures_are_all_counted() -> None:
    limiter = AuthFailureLimiter(burst=400, refill_per_s=0.0)
    lockouts: list[bool] = []

    def fail() -> None:
        for _ in range(100):
            lockouts.append(limiter.failed("h"))

    threads = [threading.Thread(target=fail) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert lockouts.count(True) == 1  # the 400th failure, exactly once
    assert not limiter.allowed("h")


def test_rate_limiter_buckets() -> None:
    now = [0.0]
    limiter = AuthFailureLimiter(burst=3, refill_per_s=1.0, max_hosts=2, clock=lambda: now[0])
    assert limiter.allowed("a")
    assert [limiter.failed("a") for _ in range(3)] == [False, False, True]
    assert not limiter.allowed("a")
    assert limiter.allowed("b")
    now[0] += 1.0
    assert limiter.allowed("a")  # one failure forgiven per second
    assert limiter.failed("a")  # and spent again: locked out anew
    for host in ("b", "c", "d"):
        limiter.failed(host)
    assert len(limiter._buckets) <= 2  # bounded memory
    assert "d" in limiter._buckets  # the newest failure is kept
