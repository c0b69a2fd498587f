"""Engine dispatch for the job worker: the engine imported on first use, optionally run on
the host's event loop.

Rules:
1. The engine (``reloadctl.agent.engine``) is imported by the first reload or rollback;
   ``patched_modules()`` answers ``[]`` without importing it when it was never loaded
   (nothing can have been patched), so ``status`` stays cheap.
2. With a loop (``start(loop=asyncio_loop)``), every reload and rollback runs on that event
   loop (``call_soon_threadsafe``), so no coroutine ever sees a half-swapped module. If the
   loop does not start the call within ``LOOP_START_TIMEOUT_S`` (blocked or stopped) the
   job fails with nothing changed; once started, the call (one transaction) is waited for.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence

from reloadctl.errors import AgentError

# typing is never imported at run time (annotations are strings): the host pays for it
# only if it uses it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any, Final, TypeVar

    from reloadctl.results import ModuleResult, PatchedModule

    _T = TypeVar("_T")

#: How long an event loop has to start running an engine call (rule 2).
LOOP_START_TIMEOUT_S: Final = 10.0


class EngineGate:
    """The engine for the job worker: imported on first use, optionally run on a loop.

    ``patched_modules()`` answers ``[]`` without importing the engine when it was never
    loaded (nothing can have been patched), so ``status`` stays cheap.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop

    def reload_modules(
        self,
        names: Sequence[str],
        *,
        dry_run: bool = False,
        dependents: bool = False,
        allow: Sequence[str] | None = None,
    ) -> list[ModuleResult]:
        """The engine's ``reload_modules``, on the loop when one is set."""
        from reloadctl.agent import engine

        return self._call(
            lambda: engine.reload_modules(
                names, dry_run=dry_run, dependents=dependents, allow=allow
            )
        )

    def rollback_modules(
        self, names: Sequence[str], *, allow: Sequence[str] | None = None
    ) -> list[ModuleResult]:
        """The engine's ``rollback_modules``, on the loop when one is set."""
        from reloadctl.agent import engine

        return self._call(lambda: engine.rollback_modules(names, allow=allow))

    def patched_modules(self) -> list[PatchedModule]:
        """The engine's ``patched_modules`` (read-only: never sent to the loop)."""
        if "reloadctl.agent.engine" not in sys.modules:
            return []
        from reloadctl.agent import engine

        return engine.patched_modules()

    def _call(self, fn: Callable[[], _T]) -> _T:
        loop = self.loop
        if loop is None:
            return fn()
        return run_on_loop(loop, fn, LOOP_START_TIMEOUT_S)


def run_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], _T], start_timeout: float) -> _T:
    """Run ``fn()`` on ``loop``'s thread and return its result (or raise its exception).

    Raises:
        AgentError: the loop is closed, or did not start ``fn`` within ``start_timeout``
            seconds (``fn`` then never runs).
    """
    lock = threading.Lock()
    done = threading.Event()
    phase = ["queued"]  # -> "running" (by the loop) or "abandoned" (by us)
    outcome: list[Any] = []

    def run() -> None:
        with lock:
            if phase[0] == "abandoned":
                return
            phase[0] = "running"
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome.append((False, exc))
        finally:
            done.set()

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError as exc:  # closed loop
        raise AgentError(f"the event loop cannot run the reload: {exc}") from None
    if not done.wait(start_timeout):
        with lock:
            if phase[0] == "queued":
                phase[0] = "abandoned"
                raise AgentError(
                    f"the event loop did not run the reload within {start_timeout:g} s "
                    "(blocked or not running); nothing was changed"
                )
        done.wait()  # started: one transaction that completes or rolls back; wait for it
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]
