"""A fake transport for fan-out and CLI tests: real threads and real sleeps, scripted agents.

It stands in for ``reloadctl.client.connection.execute`` only: everything above it (fan-out,
rollout, rendering, exit codes) runs for real.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from reloadctl.errors import TargetError, TargetUnreachable
from reloadctl.proto.messages import AgentInfo, StatusRequest
from reloadctl.results import NOT_LOADED, RELOADED, ErrorInfo, ModuleResult, PatchedModule


@dataclass
class FakeAgent:
    """How one fake agent behaves."""

    #: module -> status; modules not listed are ``not_loaded``.
    modules: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raises: Exception | None = None
    #: when set, the call blocks until this event is set (or ``block_max`` passes).
    block: threading.Event | None = None
    block_max: float = 10.0
    extra: tuple[ModuleResult, ...] = ()
    drop: tuple[str, ...] = ()  # modules the agent "forgets" to answer for


class FakeTransport:
    """Callable with ``connection.execute``'s signature; records calls and concurrency."""

    def __init__(self, agents: dict[str, FakeAgent]) -> None:
        self.agents = agents
        self.calls: list[tuple[str, object, float, float]] = []
        self.secrets: list[object] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(
        self,
        address: str,
        request: object,
        *,
        secret: object,
        connect_timeout: float,
        timeout: float,
    ) -> AgentInfo | tuple[ModuleResult, ...]:
        with self._lock:
            self.calls.append((address, request, connect_timeout, timeout))
            self.secrets.append(secret)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            agent = self.agents.get(address)
            if agent is None:
                raise TargetUnreachable(f"{address}: connection refused")
            if agent.delay:
                time.sleep(agent.delay)
            if agent.block is not None:
                agent.block.wait(agent.block_max)
            if agent.raises is not None:
                raise agent.raises
            if isinstance(request, StatusRequest):
                return AgentInfo(
                    pid=4242,
                    program="shop",
                    python="3.11.7",
                    version="0.1.0",
                    started_at=1_700_000_000.0,
                    uptime_s=3725.0,
                    address=address,
                    patched=(PatchedModule("shop.pricing", 2, 1_700_000_100.0, True),),
                )
            results = []
            for m in request.modules:  # type: ignore[attr-defined]
                if m in agent.drop:
                    continue
                status = agent.modules.get(m, NOT_LOADED)
                error = None
                if status not in (RELOADED, "unchanged", NOT_LOADED):
                    error = ErrorInfo("SyntaxError", "invalid syntax (m.py, line 3)", "Traceback")
                results.append(ModuleResult(m, status, error, duration_ms=1.5))
            return (*results, *agent.extra)
        finally:
            with self._lock:
                self.active -= 1


def refused() -> TargetError:
    from reloadctl.errors import TargetRefused

    return TargetRefused("forbidden", "agent is read-only")
