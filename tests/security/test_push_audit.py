"""A push through a real agent on a real socket: the host's audit hook sees every module with
its digest and size and may veto; the agent's log names the peer, modules, digests and sizes;
a read-only agent refuses a push like any reload."""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit import SECRET, short_tmpdir

from reloadctl.agent import start
from reloadctl.client.connection import execute
from reloadctl.errors import TargetRefused
from reloadctl.proto.messages import PushedSource, ReloadRequest
from reloadctl.secrets import Secret

_SEEN: list[tuple[object, ...]] = []
_VETO = threading.Event()


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event == "reloadctl.push":
        _SEEN.append(args)
        if _VETO.is_set():
            raise PermissionError("pushes are not allowed here")


sys.addaudithook(_hook)  # permanent: it only records, and vetoes only while the flag is set


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("RELOADCTL_SECRET", "RELOADCTL_SECRET_FILE", "RELOADCTL_AGENT_LISTEN"):
        monkeypatch.delenv(var, raising=False)
    with short_tmpdir() as d:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
        name = f"rc_pushaudit_{uuid.uuid4().hex[:8]}"
        (Path(d) / f"{name}.py").write_text("VALUE = 1\n")
        sys.path.insert(0, str(d))
        __import__(name)
        try:
            yield name
        finally:
            sys.path.remove(str(d))
            sys.modules.pop(name, None)


def _push(name: str, text: str) -> ReloadRequest:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return ReloadRequest((name,), push=(PushedSource(name, f"{name}.py", text, digest),))


def test_push_is_audited_logged_and_vetoable(module: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reloadctl")
    agent = start("tcp://127.0.0.1:0", secret=SECRET, accept_push=True)
    text = "VALUE = 2\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    try:
        _SEEN.clear()
        results = execute(
            agent.address, _push(module, text), secret=Secret(SECRET), connect_timeout=3, timeout=10
        )
        assert [r.status for r in results] == ["reloaded"]  # type: ignore[union-attr]
        assert sys.modules[module].VALUE == 2
        assert _SEEN == [(((module, digest, len(text)),),)]
        _VETO.set()
        try:
            with pytest.raises(TargetRefused, match="pushes are not allowed here") as info:
                execute(
                    agent.address,
                    _push(module, "VALUE = 3\n"),
                    secret=Secret(SECRET),
                    connect_timeout=3,
                    timeout=10,
                )
        finally:
            _VETO.clear()
        assert info.value.code == "forbidden"
        assert sys.modules[module].VALUE == 2
    finally:
        agent.stop()
    text_log = "\n".join(r.getMessage() for r in caplog.records)
    assert "from 127.0.0.1:" in text_log
    assert f"push of 1 files, {len(text)} bytes: {module} sha256={digest} {len(text)} B" in text_log


def test_a_read_only_agent_refuses_a_push(module: str) -> None:
    agent = start("tcp://127.0.0.1:0", secret=SECRET, accept_push=True, read_only=True)
    try:
        with pytest.raises(TargetRefused, match="read-only"):
            execute(
                agent.address,
                _push(module, "VALUE = 2\n"),
                secret=Secret(SECRET),
                connect_timeout=3,
                timeout=10,
            )
    finally:
        agent.stop()
    assert sys.modules[module].VALUE == 1
