"""Authorization through a live agent: the allow list holds for every path that can run
module code (direct, dependents, rollback), read-only refuses them all, the kill switch
starts nothing."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit import SECRET, short_tmpdir

from reloadctl.agent import start
from reloadctl.client.connection import execute
from reloadctl.errors import TargetRefused
from reloadctl.proto.messages import ReloadRequest, RollbackRequest, StatusRequest
from reloadctl.secrets import Secret


@pytest.fixture
def pkg(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, Path, Path]]:
    """``okmod`` (allowed) and ``other`` (not allowed) which imports from ``okmod``; each
    counts its executions in ``runs.txt``."""
    for var in (
        "RELOADCTL_SECRET",
        "RELOADCTL_SECRET_FILE",
        "RELOADCTL_AGENT_LISTEN",
        "RELOADCTL_AGENT_ALLOW",
        "RELOADCTL_AGENT_READ_ONLY",
        "RELOADCTL_AGENT_DISABLE",
    ):
        monkeypatch.delenv(var, raising=False)
    tag = uuid.uuid4().hex[:8]
    ok, other = f"rc_ok_{tag}", f"rc_other_{tag}"
    with short_tmpdir() as d:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
        runs = d / "runs.txt"
        (d / f"{ok}.py").write_text("def f():\n    return 1\n")
        (d / f"{other}.py").write_text(
            f"from {ok} import f\nwith open({str(runs)!r}, 'a') as fh:\n    fh.write('x')\n"
        )
        sys.path.insert(0, str(d))
        try:
            __import__(other)
            yield ok, other, d, runs
        finally:
            sys.path.remove(str(d))
            sys.modules.pop(ok, None)
            sys.modules.pop(other, None)


def call(address: str, request: object):  # type: ignore[no-untyped-def]
    return execute(
        address,
        request,
        secret=Secret(SECRET),
        connect_timeout=3,
        timeout=10,  # type: ignore[arg-type]
    )


def test_allow_list_holds_for_dependents_and_rollback(
    pkg: tuple[str, str, Path, Path],
) -> None:
    ok, other, d, runs = pkg
    agent = start("tcp://127.0.0.1:0", secret=SECRET, allow=["rc_ok_*"])
    try:
        assert runs.read_text() == "x"
        (d / f"{ok}.py").write_text("def f():\n    return 2\n")
        results = call(agent.address, ReloadRequest((ok,), dependents=True))
        by_module = {r.module: r.status for r in results}
        assert by_module[ok] == "reloaded"
        assert by_module.get(other) in (None, "refused"), by_module
        # dependents=True only rebinds `from m import NAME` copies (engine/dependents.py);
        # the body of a module outside the allow list never runs again
        assert runs.read_text() == "x"
        refused = call(agent.address, ReloadRequest((other,)))
        assert [r.status for r in refused] == ["refused"]
        assert runs.read_text() == "x"
        refused = call(agent.address, RollbackRequest((other,)))
        assert [r.status for r in refused] == ["refused"]
    finally:
        agent.stop()


def test_read_only_refuses_everything_but_status(pkg: tuple[str, str, Path, Path]) -> None:
    ok, _other, _d, _runs = pkg
    agent = start("tcp://127.0.0.1:0", secret=SECRET, read_only=True)
    try:
        for request in (
            ReloadRequest((ok,)),
            ReloadRequest((ok,), dry_run=True),
            RollbackRequest((ok,)),
        ):
            with pytest.raises(TargetRefused, match="read-only"):
                call(agent.address, request)
        assert call(agent.address, StatusRequest()).read_only
    finally:
        agent.stop()


def test_kill_switch_listens_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setenv("RELOADCTL_AGENT_DISABLE", "yes please")  # anything odd is still on
    before = {t.name for t in threading.enumerate()}
    agent = start("tcp://127.0.0.1:0", secret=SECRET)
    assert not agent.enabled and agent.address == ""
    assert {t.name for t in threading.enumerate()} == before
    agent.stop()
