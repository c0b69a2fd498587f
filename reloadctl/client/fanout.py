"""Run one request on many targets concurrently and report one outcome per target as it ends.

Rules:
1. Every target passed to ``run`` gets exactly one ``Outcome``, and a reload or rollback
   outcome has at least one ``ModuleResult`` per requested module: what the agent said, or
   a synthesized result whose status says why there is none (``unreachable``, ``timeout``,
   ``auth_failed``, ``refused``, ``failed``, ``not_attempted``). Silence is never success.
2. At most ``parallel`` transport calls are in flight. The transport gets the connect
   timeout and the operation timeout separately; ``run`` also enforces them itself (plus a
   small grace), so a transport that hangs costs one abandoned daemon thread, not the run.
   Calls run on daemon worker threads that are reused from target to target (a thread
   start costs about as much client CPU as a quarter of a local reload); a worker stuck in
   an abandoned call is replaced, and every worker ends once ``run`` returns and its call
   (if any) does.
3. A global ``deadline`` (seconds from the start of ``run``) bounds the whole run: targets
   still in flight then are ``timeout``; targets not started are ``not_attempted``.
4. Cancelling (the ``cancel`` event, ``--fail-fast``, or Ctrl-C in the calling thread) stops
   scheduling: targets not started are ``not_attempted``; in-flight targets get up to
   ``interrupt_grace`` seconds to finish, then are ``timeout``. A second Ctrl-C stops
   waiting at once. While ``run`` runs in the main thread, Ctrl-C is counted by a signal
   handler instead of raised, so it can arrive anywhere (in ``on_outcome``, while a target
   is being scheduled) without losing the records of targets that already answered.
5. ``on_outcome`` is called in the thread that called ``run`` (never in a worker), in
   completion order, as soon as each outcome is known; worker threads never print.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from reloadctl.errors import (
    RemoteProtocolError,
    TargetAuthFailed,
    TargetRefused,
    TargetTimeout,
    TargetUnreachable,
)
from reloadctl.proto.messages import AgentInfo, ReloadRequest, RollbackRequest, StatusRequest
from reloadctl.results import (
    AUTH_FAILED,
    FAILED,
    NOT_ATTEMPTED,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    ErrorInfo,
    ModuleResult,
)

if TYPE_CHECKING:
    from reloadctl.client.connection import TlsSettings
    from reloadctl.client.targets import Target
    from reloadctl.secrets import Secret

__all__ = [
    "ANSWERED",
    "FanoutOptions",
    "FanoutReport",
    "Outcome",
    "Transport",
    "default_transport",
    "run",
    "unanswered",
]

#: Target-level status of an outcome whose agent answered (per-module statuses say the rest).
ANSWERED: Final = "ok"
#: How often the waiting loop looks at the cancel event when nothing else happens.
_POLL_S: Final = 0.05

Request = ReloadRequest | RollbackRequest | StatusRequest
Reply = AgentInfo | tuple[ModuleResult, ...]


class Transport(Protocol):
    """The shape of ``reloadctl.client.connection.execute`` (injected for tests)."""

    def __call__(
        self,
        address: str,
        request: Request,
        *,
        secret: Secret | None,
        connect_timeout: float,
        timeout: float,
    ) -> Reply: ...


@dataclass(frozen=True, slots=True)
class FanoutOptions:
    """Concurrency and time bounds of one fan-out (all durations in seconds)."""

    parallel: int = 16
    connect_timeout: float = 2.0
    timeout: float = 30.0
    #: Bound on the whole run, from its start; None for no global bound.
    deadline: float | None = None
    #: Extra time ``run`` waits past a target's own budget before it gives up on it.
    grace: float = 1.0
    #: After a cancel or Ctrl-C, how long in-flight targets may still take.
    interrupt_grace: float = 2.0

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise ValueError("parallel must be at least 1")
        if self.connect_timeout <= 0 or self.timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be positive")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one target ended.

    ``status`` is ``ANSWERED`` when the agent replied (then ``results`` holds its module
    results, or ``info`` its ``AgentInfo``), else the target-level reason (a TARGET status,
    ``refused`` or ``failed``) with ``error`` saying why and ``results`` synthesized from it.
    """

    target: Target
    status: str
    results: tuple[ModuleResult, ...] = ()
    info: AgentInfo | None = None
    error: ErrorInfo | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class FanoutReport:
    """Every outcome of a run, in target order, and why the run stopped early, if it did."""

    outcomes: tuple[Outcome, ...]
    interrupted: bool = False
    cancelled: bool = False
    deadline_hit: bool = False


def _modules_of(request: Request) -> tuple[str, ...]:
    return () if isinstance(request, StatusRequest) else request.modules


def unanswered(
    target: Target, request: Request, status: str, error: ErrorInfo, started: float | None = None
) -> Outcome:
    """An outcome for a target that produced no answer: one result per requested module.

    Args:
        target: the target.
        request: what it was asked (its modules get one result each).
        status: why there is no answer (a TARGET status, ``refused`` or ``failed``).
        error: the reason, repeated in every module result.
        started: ``time.monotonic()`` when the attempt began (None: never attempted).
    """
    ms = 0.0 if started is None else round((time.monotonic() - started) * 1000, 3)
    results = tuple(
        ModuleResult(module=m, status=status, error=error, duration_ms=ms)
        for m in _modules_of(request)
    )
    return Outcome(target, status, results, error=error, duration_ms=ms)


def _answered(target: Target, request: Request, reply: object, started: float) -> Outcome:
    """Check the reply's shape against the request and complete missing module results."""
    ms = round((time.monotonic() - started) * 1000, 3)
    if isinstance(request, StatusRequest):
        if isinstance(reply, AgentInfo):
            return Outcome(target, ANSWERED, info=reply, duration_ms=ms)
    elif isinstance(reply, tuple) and all(isinstance(r, ModuleResult) for r in reply):
        by_module: dict[str, ModuleResult] = {}
        for r in reply:
            by_module.setdefault(r.module, r)
        missing = ErrorInfo("MissingResult", "the agent sent no result for this module")
        results = [
            by_module.pop(m) if m in by_module else ModuleResult(m, FAILED, missing, duration_ms=ms)
            for m in request.modules
        ]
        # What is left is what the agent did beyond the request (--dependents): keep it.
        results.extend(by_module.values())
        return Outcome(target, ANSWERED, tuple(results), duration_ms=ms)
    error = ErrorInfo("RemoteProtocolError", f"unexpected reply {type(reply).__name__}")
    return unanswered(target, request, FAILED, error, started)


def _call(
    transport: Transport,
    *,
    target: Target,
    request: Request,
    secret: Secret | None,
    connect_timeout: float,
    timeout: float,
) -> Outcome:
    """One transport call, every exception turned into an outcome (rule 1)."""
    started = time.monotonic()
    try:
        reply = transport(
            target.address,
            request,
            secret=secret,
            connect_timeout=connect_timeout,
            timeout=timeout,
        )
    except TargetAuthFailed as exc:
        return unanswered(target, request, AUTH_FAILED, _error(exc), started)
    except TargetTimeout as exc:
        return unanswered(target, request, TIMEOUT, _error(exc), started)
    except TargetUnreachable as exc:
        return unanswered(target, request, UNREACHABLE, _error(exc), started)
    except TargetRefused as exc:
        return unanswered(target, request, REFUSED, _error(exc), started)
    except RemoteProtocolError as exc:
        return unanswered(target, request, FAILED, _error(exc), started)
    except Exception as exc:  # noqa: BLE001 - a transport bug must not lose the other targets
        return unanswered(target, request, FAILED, _error(exc), started)
    return _answered(target, request, reply, started)


def _error(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(type(exc).__name__, str(exc) or type(exc).__name__)


def default_transport(tls: TlsSettings | None = None) -> Transport:
    """The real transport: ``connection.execute``, with ``tls`` for ``tls://`` targets."""
    # Imported here: connection pulls in rpyc, which --help and `targets` must not pay for.
    # connection imports rpyc lazily, on its first call. rpyc's modules import each other
    # in a cycle, and two worker threads importing them at once hit CPython's import
    # deadlock detection (seen: _DeadlockError in rpyc.utils.factory, KeyError 'rpyc', with
    # two local targets). So the import happens here, once, before any worker starts.
    import rpyc.core.channel
    import rpyc.core.stream
    import rpyc.utils.factory  # noqa: F401

    from reloadctl.client import connection

    if tls is None:
        execute: Transport = connection.execute
        return execute
    return functools.partial(connection.execute, tls=tls)


@contextlib.contextmanager
def _counted_interrupts() -> Iterator[list[int]]:
    """Count Ctrl-C presses (rule 4) instead of raising, in the main thread, while open.

    Where SIGINT is not Python's default (ignored, or the program's own handler) or this is
    not the main thread, nothing is installed and a ``KeyboardInterrupt`` is still handled
    where ``run`` waits.
    """
    presses: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield presses
        return
    signal.signal(signal.SIGINT, lambda signum, _frame: presses.append(signum))
    try:
        yield presses
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(
    targets: Sequence[Target],
    request: Request,
    *,
    options: FanoutOptions | None = None,
    transport: Transport | None = None,
    secret_for: Callable[[Target], Secret | None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    cancel: threading.Event | None = None,
) -> FanoutReport:
    """Send ``request`` to every target, at most ``options.parallel`` at a time.

    Args:
        targets: the selection, in order; outcomes come back in this order too.
        request: a reload, rollback or status request.
        options: concurrency and time bounds (rules 2-4).
        transport: the call to make per target; default ``default_transport()``.
        secret_for: the secret for a target (None: no secret).
        on_outcome: called with each outcome as soon as it is known (rule 5).
        cancel: set it (from any thread, or from ``on_outcome``) to stop scheduling.

    Returns:
        A ``FanoutReport`` with one outcome per target (rule 1).
    """
    opts = options or FanoutOptions()
    call = transport or default_transport()
    cancel = cancel or threading.Event()
    started = time.monotonic()
    deadline_at = None if opts.deadline is None else started + opts.deadline
    done: dict[int, Outcome] = {}
    inflight: dict[int, float] = {}  # index -> monotonic time it must be done by
    pending = list(range(len(targets)))
    pending.reverse()  # pop() from the end keeps selection order
    results: queue.SimpleQueue[tuple[int, Outcome]] = queue.SimpleQueue()
    interrupted = deadline_hit = False
    stop_waiting_at: float | None = None
    # Rule 2: the worker pool. ``idle`` counts workers waiting on ``work`` (each result,
    # late ones included, means its worker is waiting again); None tells a worker to end.
    work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
    workers = idle = 0

    def serve() -> None:
        while (item := work.get()) is not None:
            item()

    def finish(index: int, outcome: Outcome) -> None:
        done[index] = outcome
        inflight.pop(index, None)
        if on_outcome is not None:
            on_outcome(outcome)

    def start(index: int) -> None:
        nonlocal workers, idle
        target = targets[index]
        now = time.monotonic()
        if target.problem:
            error = ErrorInfo("AddressError", target.problem)
            finish(index, unanswered(target, request, UNREACHABLE, error, now))
            return
        timeout = opts.timeout
        if deadline_at is not None:
            timeout = max(0.001, min(timeout, deadline_at - now))
        secret = secret_for(target) if secret_for is not None else None
        inflight[index] = now + opts.connect_timeout + timeout + opts.grace

        def attempt() -> None:
            outcome = _call(
                call,
                target=target,
                request=request,
                secret=secret,
                connect_timeout=opts.connect_timeout,
                timeout=timeout,
            )
            results.put((index, outcome))

        if idle:
            idle -= 1
        else:
            # Daemon threads: a transport stuck in a syscall must not keep the CLI from exiting.
            workers += 1
            name = f"reloadctl-fanout-{workers}"
            threading.Thread(target=serve, name=name, daemon=True).start()
        work.put(attempt)

    def abandon(indexes: list[int], status: str, message: str) -> None:
        for index in sorted(indexes):
            error = ErrorInfo("TargetTimeout" if status == TIMEOUT else "NotAttempted", message)
            finish(index, unanswered(targets[index], request, status, error, time.monotonic()))

    def interrupt() -> None:
        nonlocal interrupted, stop_waiting_at
        if interrupted:  # the second Ctrl-C: stop waiting for anyone
            stop_waiting_at = time.monotonic()
        interrupted = True
        cancel.set()

    handled = 0  # Ctrl-C presses acted on
    with _counted_interrupts() as presses:
        try:
            while pending or inflight:
                while handled < len(presses):
                    handled += 1
                    interrupt()
                stopping = cancel.is_set() or interrupted
                if stopping and pending:
                    why = "interrupted" if interrupted else "the run was stopped before this target"
                    abandon(pending, NOT_ATTEMPTED, why)
                    pending.clear()
                while pending and len(inflight) < opts.parallel and not cancel.is_set():
                    start(pending.pop())
                if not inflight:
                    continue
                now = time.monotonic()
                if stopping and stop_waiting_at is None:
                    stop_waiting_at = now + opts.interrupt_grace
                wake = min(inflight.values())
                if deadline_at is not None:
                    wake = min(wake, deadline_at)
                if stop_waiting_at is not None:
                    wake = min(wake, stop_waiting_at)
                try:
                    index, outcome = results.get(timeout=max(0.0, min(wake - now, _POLL_S)))
                except queue.Empty:
                    pass
                except KeyboardInterrupt:
                    interrupt()
                else:
                    idle += 1
                    if index in inflight:  # else it was already given up on: drop the late answer
                        finish(index, outcome)
                now = time.monotonic()
                if deadline_at is not None and now >= deadline_at:
                    deadline_hit = True
                    why = f"the global deadline of {opts.deadline:g}s passed"
                    abandon(list(inflight), TIMEOUT, why)
                    abandon(pending, NOT_ATTEMPTED, why)
                    pending.clear()
                elif stop_waiting_at is not None and now >= stop_waiting_at:
                    abandon(list(inflight), TIMEOUT, "no answer before the run was stopped")
                else:
                    late = [i for i, due in inflight.items() if now >= due]
                    abandon(late, TIMEOUT, "no answer within the connect and operation timeouts")
        finally:
            for _ in range(workers):  # one each: a worker still in an abandoned call ends after it
                work.put(None)
        interrupted = interrupted or handled < len(presses)  # pressed as the last one answered
    return FanoutReport(
        outcomes=tuple(done[i] for i in range(len(targets))),
        interrupted=interrupted,
        cancelled=cancel.is_set() and not interrupted,
        deadline_hit=deadline_hit,
    )
