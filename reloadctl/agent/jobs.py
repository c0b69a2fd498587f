"""Reload and rollback jobs: one worker thread runs them in order; clients poll their results.

Results arrive per job, not per module: a reload is one transaction (the engine applies
the whole batch or rolls all of it back), so a job's results are set all at once, when
the engine call returns. Streaming them module by module would show a module
``reloaded`` and then, when a later module of the batch fails, ``failed``
(``RolledBack``); a result once seen is final. The poll cursor therefore only splits a
large answer over several replies (``service.encode_events``); a poll that waits returns
when the whole job is decided.

Rules:
1. ``submit`` queues a job and returns its id at once; jobs run one at a time, in order, on
   ONE daemon thread (``reloadctl-worker``, started with the first job), never on a
   connection thread. A client that disconnects does not affect a job.
2. At most ``MAX_ACTIVE`` jobs may be queued or running (more: ``JobsBusy``); finished jobs
   are kept ``JOB_TTL_S`` seconds and at most ``MAX_KEPT`` of them, oldest dropped first.
3. A job is over its deadline ``deadline_s`` seconds after it was accepted. Then:
   - still queued: it never runs; every module is ``failed`` with ``ErrorInfo("Timeout")``
     saying it did not start;
   - running: it is reported the same way at once, saying the engine call is still running
     in the agent and will complete or roll back as one transaction (the engine's
     guarantee); its late results are logged, not reported, and ``status`` shows any
     patched module.
4. ``poll(job, cursor, wait_s)`` returns the results from ``cursor`` on, waiting at most
   ``min(wait_s, MAX_WAIT_S)`` seconds for something new; ``done`` is set with the job's
   results, which are final and complete (one result per module). An unknown or expired
   job raises ``UnknownJob``.
5. An engine that raises (a bug), whatever it raises (``SystemExit`` and
   ``KeyboardInterrupt`` from a module body or hook included), fails every module of the job
   with the exception's class name; the worker survives everything and nothing reaches
   ``threading.excepthook`` (the host's stderr).
6. ``patched_modules`` (for ``status``) never waits for a running job: the engine answers
   from its record table (a short lock of its own), never from under its reload lock; a
   running job's modules show once it has finished. Nothing about it runs per job.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from reloadctl.agent.dispatch import EngineGate
from reloadctl.errors import AgentError
from reloadctl.proto.messages import JobEvents, ReloadRequest, RollbackRequest
from reloadctl.results import FAILED, ErrorInfo, ModuleResult, PatchedModule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, Protocol

    class Engine(Protocol):
        """The three engine functions the agent uses (``reloadctl.agent.engine``)."""

        def reload_modules(
            self,
            names: Sequence[str],
            *,
            dry_run: bool = ...,
            dependents: bool = ...,
            allow: Sequence[str] | None = ...,
        ) -> list[ModuleResult]: ...

        def rollback_modules(
            self, names: Sequence[str], *, allow: Sequence[str] | None = ...
        ) -> list[ModuleResult]: ...

        def patched_modules(self) -> list[PatchedModule]: ...


log = logging.getLogger(__name__)

MAX_ACTIVE: Final = 8
MAX_KEPT: Final = 64
JOB_TTL_S: Final = 300.0
MAX_WAIT_S: Final = 10.0


class JobsBusy(AgentError):
    """Too many jobs are queued or running."""


class UnknownJob(AgentError):
    """No such job: it never existed or has expired."""


@dataclass(slots=True, eq=False)
class Job:
    """One accepted request and what is known of its outcome (guarded by the manager's lock)."""

    id: str
    request: ReloadRequest | RollbackRequest
    peer: str
    accepted_at: float
    deadline: float
    results: list[ModuleResult] = field(default_factory=list)
    started: bool = False
    done: bool = False
    finished_at: float = 0.0


def _is_done(job: Job) -> bool:
    # A function, so that type checkers do not assume the flag cannot change meanwhile.
    return job.done


def timeout_results(modules: Sequence[str], reason: str) -> list[ModuleResult]:
    """Every module ``failed`` with ``ErrorInfo(type="Timeout", message=reason)``."""
    return [ModuleResult(m, FAILED, ErrorInfo("Timeout", reason)) for m in modules]


class JobManager:
    """Queue, run and report jobs (rules 1-5). Thread-safe.

    Args:
        allow: fnmatch patterns of the modules the engine may touch (None: all).
        engine: what runs the jobs (default: the real engine, imported by the first job,
            ``dispatch.EngineGate``).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        allow: Sequence[str] | None = None,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allow = None if allow is None else list(allow)
        self._engine: Engine = EngineGate() if engine is None else engine
        self._clock = clock
        self._cond = threading.Condition()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: deque[Job] = deque()
        self._worker: threading.Thread | None = None
        self._stopping = False

    # -- public ----------------------------------------------------------------------------

    def submit(
        self, request: ReloadRequest | RollbackRequest, peer: str = "?", request_id: str = ""
    ) -> str:
        """Queue ``request``; return the job id (``peer`` and ``request_id`` go in the logs).

        Raises:
            JobsBusy: rule 2.
        """
        now = self._clock()
        with self._cond:
            if self._stopping:
                raise JobsBusy("the agent is stopping")
            self._expire(now)
            if sum(1 for j in self._jobs.values() if not j.done) >= MAX_ACTIVE:
                raise JobsBusy(f"{MAX_ACTIVE} jobs are already queued or running")
            job = Job(
                # os.urandom, not the secrets module: that one loads OpenSSL's digests
                id=os.urandom(8).hex(),
                request=request,
                peer=f"{peer} request {request_id}" if request_id else peer,
                accepted_at=now,
                deadline=now + request.deadline_s,
            )
            self._jobs[job.id] = job
            self._queue.append(job)
            self._ensure_worker()
            self._cond.notify_all()
        return job.id

    def poll(self, job_id: str, cursor: int, wait_s: float) -> JobEvents:
        """Results of ``job_id`` from ``cursor`` (rule 4).

        Raises:
            UnknownJob: rule 4.
        """
        end = self._clock() + max(0.0, min(wait_s, MAX_WAIT_S))
        with self._cond:
            while True:
                now = self._clock()
                job = self._jobs.get(job_id)
                if job is None:
                    raise UnknownJob(job_id)
                self._check_deadline(job, now)
                if job.done or len(job.results) > cursor or now >= end or self._stopping:
                    break
                self._cond.wait(min(end, job.deadline) - now + 0.001)
            start = min(cursor, len(job.results))
            return JobEvents(
                job=job.id,
                cursor=len(job.results),
                results=tuple(job.results[start:]),
                done=job.done,
            )

    def patched_modules(self) -> list[PatchedModule]:
        """The engine's ``patched_modules()`` (rule 6); empty when the engine fails."""
        try:
            patched = list(self._engine.patched_modules())
            if "reloadctl.agent.push" in sys.modules:  # origins of pushed code
                return list(sys.modules["reloadctl.agent.push"].annotate(patched))
            return [replace(p, origin="disk") for p in patched]  # nothing was ever pushed
        except BaseException:  # status must answer even with a broken engine
            log.exception("engine patched_modules() failed")
            return []

    def stop(self, timeout: float = 1.0) -> None:
        """Stop taking jobs; wait up to ``timeout`` for the worker (a running reload goes on)."""
        with self._cond:
            self._stopping = True
            worker = self._worker
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    # -- internals (call with the lock held) -----------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="reloadctl-worker", daemon=True)
            self._worker.start()

    def _expire(self, now: float) -> None:
        for job_id, job in list(self._jobs.items()):
            if job.done and now - job.finished_at > JOB_TTL_S:
                del self._jobs[job_id]
        done = [j for j in self._jobs.values() if j.done]
        for job in done[: max(0, len(done) - MAX_KEPT)]:
            del self._jobs[job.id]

    def _finish(self, job: Job, results: list[ModuleResult], now: float) -> None:
        job.results = results
        job.done = True
        job.finished_at = now
        self._cond.notify_all()

    def _check_deadline(self, job: Job, now: float) -> None:
        if job.done or now < job.deadline:
            return
        if job.started:
            reason = (
                f"not finished within {job.request.deadline_s:g} s; the reload is still "
                "running in the agent and will complete or roll back as one transaction "
                "(check `reloadctl status`)"
            )
        else:
            reason = (
                f"not started within {job.request.deadline_s:g} s (queued behind another "
                "job); nothing was changed"
            )
        log.warning("job %s from %s timed out: %s", job.id, job.peer, reason)
        self._finish(job, timeout_results(job.request.modules, reason), now)

    # -- the worker ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                if not self._work_one():
                    return
            except BaseException:  # rule 5: the worker never dies
                log.exception("agent job worker error (continuing)")

    def _work_one(self) -> bool:
        """Run the next job; False when the manager is stopping."""
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return False
                job = self._queue.popleft()
                self._check_deadline(job, self._clock())
                if job.done:
                    continue
                job.started = True
            results = self._run(job)
            with self._cond:
                if _is_done(job):  # reported as timed out meanwhile (rule 3)
                    log.warning(
                        "job %s finished after its deadline: %s",
                        job.id,
                        ", ".join(f"{r.module}={r.status}" for r in results),
                    )
                    return True
                self._finish(job, results, self._clock())
            log.info(
                "job %s from %s done: %s",
                job.id,
                job.peer,
                ", ".join(f"{r.module}={r.status}" for r in results),
            )
            return True

    def _verifier(
        self, job: Job, request: ReloadRequest
    ) -> Callable[[list[ModuleResult]], list[ModuleResult]] | None:
        """The request's ``--verify`` over a reload's results (None: nothing to verify)."""
        if not request.verify or request.dry_run:
            return None
        from reloadctl.agent.verify import verify_or_roll_back

        def verify(results: list[ModuleResult]) -> list[ModuleResult]:
            return verify_or_roll_back(
                self._engine,
                request.verify,
                results,
                allow=self._allow,
                past_deadline=lambda: self._clock() >= job.deadline,
            )

        return verify

    def _run(self, job: Job) -> list[ModuleResult]:
        request = job.request
        try:
            engine = self._engine
            if isinstance(request, ReloadRequest):
                verify = self._verifier(job, request)
                if request.push:
                    from reloadctl.agent import push

                    results = push.apply(engine, request, self._allow, after=verify)
                else:
                    results = engine.reload_modules(
                        list(request.modules),
                        dry_run=request.dry_run,
                        dependents=request.dependents,
                        allow=self._allow,
                    )
                    if verify is not None:
                        results = verify(list(results))
            else:
                results = engine.rollback_modules(list(request.modules), allow=self._allow)
                if "reloadctl.agent.push" in sys.modules:  # pushed code ran: follow its finder
                    sys.modules["reloadctl.agent.push"].after_rollback(results)
            return list(results)
        except BaseException as exc:  # rule 5: the worker survives anything
            log.exception("engine failed on job %s", job.id)
            info = ErrorInfo(type(exc).__name__, f"agent error: {exc}"[:2000])
            return [ModuleResult(m, FAILED, info) for m in request.modules]
