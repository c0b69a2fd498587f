"""Fixtures shared by the agent, client, security and fault tests (the engine tests have their
own in tests/agent/engine/conftest.py). Being the root conftest, it also puts tests/ on
sys.path, so every test can ``from agentkit import ...``."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from agentkit import short_tmpdir

from reloadctl.agent import lifecycle
from reloadctl.agent.handle import Agent
from reloadctl.agent.lifecycle import start

#: Settings an outer environment could leak into a test's agent or client.
ENV_VARS = (
    "RELOADCTL_SECRET",
    "RELOADCTL_SECRET_FILE",
    "RELOADCTL_AGENT_LISTEN",
    "RELOADCTL_AGENT_ALLOW",
    "RELOADCTL_AGENT_READ_ONLY",
    "RELOADCTL_AGENT_DISABLE",
    "RELOADCTL_AGENT_MAX_CONNECTIONS",
    "RELOADCTL_AGENT_INHERIT",
    "RELOADCTL_AGENT_TLS_CERT",
    "RELOADCTL_AGENT_TLS_KEY",
    "RELOADCTL_AGENT_TLS_CA",
    "RELOADCTL_CLIENT_TLS_CERT",
    "RELOADCTL_CLIENT_TLS_KEY",
    "RELOADCTL_CLIENT_TLS_CA",
    "RELOADCTL_TLS_CERT",  # the old names, shared by agent and CLI
    "RELOADCTL_TLS_KEY",
    "RELOADCTL_TLS_CA",
)


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private, short ``XDG_RUNTIME_DIR`` and a clean environment; any agent the test left
    running in this process is stopped afterwards."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    with short_tmpdir() as d:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(d))
        yield d
        agent = lifecycle.current_agent()
        if agent is not None:
            agent.stop()


@pytest.fixture
def agents(runtime_dir: Path) -> Iterator[Callable[..., Agent]]:
    """``start`` for the test: every agent it starts is stopped at teardown."""
    started: list[Agent] = []

    def _start(*args: object, **kwargs: object) -> Agent:
        agent = start(*args, **kwargs)  # type: ignore[arg-type]
        started.append(agent)
        return agent

    yield _start
    for agent in started:
        agent.stop()


@pytest.fixture
def module(runtime_dir: Path) -> Iterator[Callable[[str], tuple[ModuleType, Path]]]:
    """``module(source)`` imports a fresh, uniquely named module written into ``runtime_dir``
    and returns it with its file, which the test may rewrite; all are forgotten after."""
    made: list[str] = []
    sys.path.insert(0, str(runtime_dir))

    def make(source: str) -> tuple[ModuleType, Path]:
        name = f"rc_mod_{uuid.uuid4().hex[:8]}"
        path = runtime_dir / f"{name}.py"
        path.write_text(source)
        made.append(name)
        return __import__(name), path

    try:
        yield make
    finally:
        sys.path.remove(str(runtime_dir))
        for name in made:
            sys.modules.pop(name, None)
