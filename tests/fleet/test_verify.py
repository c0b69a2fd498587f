"""reload --verify at the agent: a failing check rolls that reload back, with a reason."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from reloadctl.agent import Agent
from reloadctl.client.connection import execute
from reloadctl.proto.messages import ReloadRequest
from reloadctl.results import ModuleResult

V1 = "def f():\n    return 1\n\n\ndef check():\n    return f() == 1\n"


def _v2(check_body: str) -> str:
    return f"def f():\n    return 2\n\n\ndef check():\n{check_body}\n"


def _write(path: Path, source: str) -> None:
    path.write_text(source)
    t = time.time() + 2
    os.utime(path, (t, t))


def _reload(agent: Agent, name: str, verify: str, deadline: float = 5.0) -> ModuleResult:
    results = execute(
        agent.address,
        ReloadRequest((name,), deadline_s=deadline, verify=verify),
        secret=None,
        connect_timeout=2.0,
        timeout=deadline + 2,
    )
    assert isinstance(results, tuple)
    [result] = results
    return result


@pytest.fixture
def fresh(
    module: Callable[[str], tuple[ModuleType, Path]], agents: Callable[..., Agent]
) -> tuple[ModuleType, Path, Agent]:
    mod, path = module(V1)
    return mod, path, agents(secret=None)


def test_a_passing_verify_keeps_the_reload(fresh: tuple[ModuleType, Path, Agent]) -> None:
    mod, path, agent = fresh
    _write(path, _v2("    return f() == 2"))
    result = _reload(agent, mod.__name__, f"{mod.__name__}:check")
    assert result.status == "reloaded", result
    assert mod.f() == 2


CASES = [
    ("returns False", _v2("    return False"), "check", "returned False"),
    ("raises", _v2("    raise RuntimeError('db down')"), "check", "raised RuntimeError: db down"),
    ("raises SystemExit", _v2("    raise SystemExit(3)"), "check", "raised SystemExit"),
    ("not found", _v2("    return True"), "nope", "has no 'nope'"),
    ("not callable", _v2("    return True") + "\nX = 3\n", "X", "is not callable"),
]


@pytest.mark.parametrize(("case", "source", "func", "reason"), CASES, ids=[c[0] for c in CASES])
def test_a_failing_verify_rolls_back(
    fresh: tuple[ModuleType, Path, Agent], case: str, source: str, func: str, reason: str
) -> None:
    mod, path, agent = fresh
    f = mod.f
    _write(path, source)
    result = _reload(agent, mod.__name__, f"{mod.__name__}:{func}")
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "VerifyFailed"
    assert reason in result.error.message
    assert result.error.message.endswith("; rolled back")
    assert any(a.kind == "restored" for a in result.actions), result.actions
    assert mod.f() == 1  # the old code runs again
    assert mod.f is f  # identities kept through the reload and its rollback


def test_a_verify_module_that_cannot_be_imported_fails_and_rolls_back(
    fresh: tuple[ModuleType, Path, Agent],
) -> None:
    mod, path, agent = fresh
    _write(path, _v2("    return True"))
    result = _reload(agent, mod.__name__, "rc_no_such_module_xyz:check")
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "VerifyFailed"
    assert "cannot import 'rc_no_such_module_xyz'" in result.error.message
    assert mod.f() == 1


def test_a_verify_outside_allow_fails_and_rolls_back(
    module: Callable[[str], tuple[ModuleType, Path]], agents: Callable[..., Agent]
) -> None:
    mod, path = module(V1)
    agent = agents(secret=None, allow=[mod.__name__])
    _write(path, _v2("    return True"))
    result = _reload(agent, mod.__name__, "json:dumps")
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "VerifyFailed"
    assert "outside this agent's allow list" in result.error.message
    assert mod.f() == 1


def test_a_verify_runs_only_after_a_reload_that_worked(
    fresh: tuple[ModuleType, Path, Agent],
    module: Callable[[str], tuple[ModuleType, Path]],
    tmp_path: Path,
) -> None:
    mod, path, agent = fresh
    marker = tmp_path / "ran"
    checker, _ = module(
        f"def check():\n    with open({str(marker)!r}, 'a') as f:\n        f.write('x')\n"
    )
    _write(path, "def f(:\n")
    result = _reload(agent, mod.__name__, f"{checker.__name__}:check")
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "SyntaxError"
    assert not marker.exists()
    _write(path, _v2("    return True"))
    result = _reload(agent, mod.__name__, f"{checker.__name__}:check")
    assert result.status == "reloaded"  # None is not False: a check that returns nothing passes
    assert marker.read_text() == "x"


def test_a_hanging_verify_is_timeout_then_rolled_back_when_it_returns(
    fresh: tuple[ModuleType, Path, Agent],
) -> None:
    mod, path, agent = fresh
    _write(path, _v2("    import time\n    time.sleep(1.5)\n    return True"))
    started = time.monotonic()
    result = _reload(agent, mod.__name__, f"{mod.__name__}:check", deadline=0.5)
    assert time.monotonic() - started < 1.4  # answered at the deadline, not after the check
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "Timeout"
    assert mod.f() == 2  # applied, the check still running
    end = time.monotonic() + 5
    while mod.f() != 1 and time.monotonic() < end:
        time.sleep(0.05)
    assert mod.f() == 1  # the check returned after the deadline: rolled back
