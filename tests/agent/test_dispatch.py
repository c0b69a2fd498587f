"""Engine dispatch: ``start(loop=...)`` runs every reload on the service's event loop."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reloadctl.agent import dispatch, start
from reloadctl.client.connection import execute
from reloadctl.errors import AgentAlreadyRunning
from reloadctl.proto.messages import ReloadRequest
from reloadctl.results import ModuleResult

# -- start(loop=...): reloads run on the service's event loop -------------------------------

LOOP_MODULE_V1 = """
import threading
BODY_THREAD = threading.current_thread().name
A = 1
B = 1
def value():
    return A
"""


@pytest.fixture
def loop_module(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    import uuid

    name = f"loopmod_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text(LOOP_MODULE_V1)
    sys.path.insert(0, str(tmp_path))
    try:
        yield name, path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


@pytest.fixture
def service_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="service-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def _reload(address: str, name: str) -> ModuleResult:
    results = execute(
        address, ReloadRequest(modules=(name,)), secret=None, connect_timeout=2, timeout=20
    )
    assert isinstance(results, tuple) and len(results) == 1
    return results[0]


def test_loop_option_runs_every_swap_on_the_event_loop(
    runtime_dir: Path,
    loop_module: tuple[str, Path],
    service_loop: asyncio.AbstractEventLoop,
) -> None:
    name, path = loop_module
    module = importlib.import_module(name)
    assert module.BODY_THREAD == "MainThread"
    agent = start(loop=service_loop)
    assert agent.loop is service_loop

    # A coroutine checks an invariant of the module at every step it takes on the loop:
    # with the swap on the loop, it can never observe A and B from different versions.
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    async def watch() -> None:
        while not stop.is_set():
            seen.append((module.A, module.B))
            await asyncio.sleep(0)

    watcher = asyncio.run_coroutine_threadsafe(watch(), service_loop)
    try:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:  # the watcher saw version 1 first
            time.sleep(0.01)
        _edit(path, "A = 1\nB = 1", "A = 2\nB = 2")
        result = _reload(agent.address, name)
        assert result.status == "reloaded", result
        assert module.BODY_THREAD == "service-loop"  # the new body ran on the loop
        assert module.value() == 2
        time.sleep(0.05)
    finally:
        stop.set()
        watcher.result(timeout=10)
    assert all(a == b for a, b in seen), [p for p in seen if p[0] != p[1]][:3]
    assert (1, 1) in seen and (2, 2) in seen


def test_loop_that_never_runs_the_reload_changes_nothing(
    runtime_dir: Path,
    loop_module: tuple[str, Path],
    service_loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "LOOP_START_TIMEOUT_S", 0.5)
    name, path = loop_module
    module = importlib.import_module(name)
    agent = start(loop=service_loop)
    unblock = threading.Event()
    service_loop.call_soon_threadsafe(unblock.wait, 10)  # a blocked event loop
    try:
        _edit(path, "A = 1\nB = 1", "A = 3\nB = 3")
        result = _reload(agent.address, name)
        assert result.status == "failed"
        assert result.error is not None and result.error.type == "AgentError"
        assert "did not run the reload within 0.5 s" in result.error.message
        assert "nothing was changed" in result.error.message
    finally:
        unblock.set()
    # The loop runs again: the abandoned call must not apply the reload late.
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.1), service_loop).result(timeout=10)
    assert module.A == 1 and module.BODY_THREAD == "MainThread"
    assert _reload(agent.address, name).status == "reloaded"  # the loop is back: it works
    assert module.A == 3


def test_loop_can_be_attached_to_a_running_agent_once(
    runtime_dir: Path, service_loop: asyncio.AbstractEventLoop
) -> None:
    agent = start()  # e.g. started by the launcher before the service made its loop
    before = agent.loop
    assert before is None
    assert start(loop=service_loop) is agent
    assert agent.loop is service_loop
    other = asyncio.new_event_loop()
    try:
        with pytest.raises(AgentAlreadyRunning, match="loop"):
            start(loop=other)
    finally:
        other.close()
