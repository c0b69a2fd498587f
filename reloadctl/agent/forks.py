"""Process events: fork safety, stop at exit, and agents inherited by worker processes.

Rules:
1. Fork: a fork waits (at most ``FORK_WAIT_S``) while the agent thread imports and builds
   its server and while a reload runs (the engine's reload lock), so no child starts with
   half-imported or half-swapped modules. In the child the parent's agent is forgotten
   (``lifecycle.forget_after_fork``: fresh locks, the inherited sockets closed, never shut
   down). The hooks are installed once, by ``start()`` and by the first use of the engine
   through ``reloadctl.agent`` (``guard_forks``).
2. Exit: the running agent is stopped by an ``atexit`` hook (bounded, see ``Agent.stop``).
3. Inheritance (off unless asked: ``start(inherit=True)``, ``RELOADCTL_AGENT_INHERIT=1``,
   ``start_in_children()``, or the launcher): the program's worker processes get their own
   agent, each on its default unix socket ``<prog>-<its pid>.sock`` (an explicit address,
   TCP port or socket path, belongs to the one process it was given to), with the same
   secret, allow list and read-only mode. Worker processes are forked children (os.fork,
   gunicorn, multiprocessing fork) and multiprocessing children started by spawn or
   forkserver (uvicorn ``--workers``); other interpreters the program starts get none.
   Forked children are handled by the at-fork hook (not when ``subprocess`` forks to exec
   another program); spawned ones by the environment (see ``reloadctl.agent.auto``) that
   inheritance exports: ``RELOADCTL_AGENT_INHERIT=1``, the program name, allow and
   read-only, and the bootstrap directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from dataclasses import dataclass

from reloadctl.agent import config as settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any, Final

    from reloadctl.agent.handle import Agent
    from reloadctl.secrets import Secret

log = logging.getLogger(__name__)

#: How long a fork waits for a running reload to end before it goes on regardless.
FORK_WAIT_S: Final = 5.0
#: The directory whose ``sitecustomize.py`` activates agents in spawned children (rule 3).
BOOTSTRAP_DIR: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")


@dataclass(frozen=True, slots=True)
class Inheritance:
    """What a worker process's own agent is started with (rule 3)."""

    secret: Secret | None
    allow: tuple[str, ...] | None
    read_only: bool


_inherit: Inheritance | None = None
_exit_hook_registered = False
_fork_hooks_registered = False
_hooks_lock = threading.Lock()
_fork_held: list[Any] = []


def inheritance() -> Inheritance | None:
    """The settings this process's children start their agents with, if inheritance is on."""
    return _inherit


def enable_inheritance(inh: Inheritance) -> None:
    """Rule 3: remember ``inh`` for forked children; export it for spawned ones."""
    global _inherit
    _inherit = inh
    env = os.environ
    env[settings.INHERIT_ENV] = "1"
    env[settings.PROGRAM_ENV] = settings.current_program()
    if inh.allow is not None:
        env[settings.ALLOW_ENV] = ",".join(inh.allow)
    if inh.read_only:
        env[settings.READ_ONLY_ENV] = "1"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if BOOTSTRAP_DIR not in paths:
        env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *paths])


def start_inherited() -> Agent | None:
    """Start this worker process's agent from the parent's inheritance (rule 3); never raises.

    Returns:
        The agent, or None when inheritance is off, disabled, or the agent cannot start
        (logged).
    """
    inh = _inherit
    if inh is None:
        return None
    from reloadctl.agent.lifecycle import start
    from reloadctl.proto.address import format_address

    try:
        address = format_address(settings.default_listen_address())
        return start(
            address, secret=inh.secret, allow=inh.allow, read_only=inh.read_only, inherit=True
        )
    except Exception as exc:  # noqa: BLE001 - a worker must never fail because of its agent
        log.error("reloadctl agent not started in worker pid %d: %s", os.getpid(), exc)
        return None


def register_process_hooks() -> None:
    """Install the exit hook (rule 2) and the fork hooks (rule 1); idempotent."""
    global _exit_hook_registered
    with _hooks_lock:
        first = not _exit_hook_registered
        _exit_hook_registered = True
    if first:
        atexit.register(_stop_at_exit)
    guard_forks()


def guard_forks() -> None:
    """Install the at-fork hooks of rule 1 (idempotent)."""
    global _fork_hooks_registered
    with _hooks_lock:
        if _fork_hooks_registered or not hasattr(os, "register_at_fork"):
            return
        _fork_hooks_registered = True
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_release_fork_locks,
        after_in_child=_after_fork_in_child,
    )


def _stop_at_exit() -> None:
    from reloadctl.agent.lifecycle import current_agent

    agent = current_agent()
    if agent is not None:
        try:
            agent.stop()
        except Exception:  # exit must go on
            log.exception("error stopping the agent at exit")


def _before_fork() -> None:
    lifecycle = sys.modules.get("reloadctl.agent.lifecycle")
    agent = None if lifecycle is None else lifecycle.current_agent()
    if agent is not None:
        agent.wait_built(FORK_WAIT_S)
    # the engine's lock exists only once the engine was loaded
    engine = sys.modules.get("reloadctl.agent.engine")
    reload_lock = getattr(engine, "reload_lock", None)
    if reload_lock is None:
        return
    try:
        lock = reload_lock()
        if lock.acquire(timeout=FORK_WAIT_S):
            _fork_held.append(lock)
        else:
            log.warning("fork while a reload runs for over %g s: not waiting longer", FORK_WAIT_S)
    except Exception:  # a fork must never fail because of us
        log.debug("could not take the reload lock before fork", exc_info=True)


def _release_fork_locks() -> None:
    while _fork_held:
        with contextlib.suppress(RuntimeError):
            _fork_held.pop().release()


def _after_fork_in_child() -> None:
    global _hooks_lock
    _release_fork_locks()
    _hooks_lock = threading.Lock()  # a parent thread may have held it at fork time
    lifecycle = sys.modules.get("reloadctl.agent.lifecycle")
    if lifecycle is not None:
        lifecycle.forget_after_fork()
    if _inherit is not None and not _exec_follows():
        start_inherited()


def _exec_follows() -> bool:
    # subprocess runs the at-fork hooks (only) when it has a preexec_fn to call, in a child
    # that execs another program right after: an agent there would be a stale socket.
    frame: FrameType | None = sys._getframe(2)  # 1: the at-fork hook; 2: the forking code
    for _ in range(4):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == "_execute_child" and code.co_filename.endswith("subprocess.py"):
            return True
        frame = frame.f_back
    return False
