"""The job manager: one worker, bounded jobs, deadlines, expiry (engine double with a gate)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from reloadctl.agent import jobs
from reloadctl.agent.jobs import JobManager, JobsBusy, UnknownJob
from reloadctl.proto.messages import ReloadRequest, RollbackRequest
from reloadctl.results import ModuleResult, PatchedModule


class GatedEngine:
    """Implements the engine's three functions; each reload waits until the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: list[tuple[str, tuple[str, ...], str]] = []
        self.raise_next: BaseException | None = None
        #: the threads that ran engine calls (the job worker)
        self.threads: list[threading.Thread] = []

    def reload_modules(
        self,
        names: Sequence[str],
        *,
        dry_run: bool = False,
        dependents: bool = False,
        allow: Sequence[str] | None = None,
    ) -> list[ModuleResult]:
        self.calls.append(("reload", tuple(names), threading.current_thread().name))
        self.threads.append(threading.current_thread())
        self.gate.wait(10)
        if self.raise_next is not None:
            exc, self.raise_next = self.raise_next, None
            raise exc
        return [ModuleResult(n, "reloaded") for n in names]

    def rollback_modules(
        self, names: Sequence[str], *, allow: Sequence[str] | None = None
    ) -> list[ModuleResult]:
        self.calls.append(("rollback", tuple(names), threading.current_thread().name))
        self.threads.append(threading.current_thread())
        return [ModuleResult(n, "reloaded") for n in names]

    def patched_modules(self) -> list[PatchedModule]:
        return []


@pytest.fixture
def engine() -> Iterator[GatedEngine]:
    e = GatedEngine()
    yield e
    e.gate.set()


@pytest.fixture
def manager(engine: GatedEngine) -> Iterator[JobManager]:
    m = JobManager(engine=engine)
    yield m
    engine.gate.set()
    m.stop()
    assert not any(worker.is_alive() for worker in engine.threads)


def test_jobs_run_in_order_on_one_worker_thread(manager: JobManager, engine: GatedEngine) -> None:
    a = manager.submit(ReloadRequest(("a",)))
    b = manager.submit(RollbackRequest(("b",)))
    assert manager.poll(a, 0, 0.0).done is False  # blocked in the engine
    engine.gate.set()
    assert manager.poll(b, 0, 5.0).done
    assert manager.poll(a, 0, 0.0).results[0].module == "a"
    assert [c[0] for c in engine.calls] == ["reload", "rollback"]
    assert {c[2] for c in engine.calls} == {"reloadctl-worker"}


def test_poll_waits_for_results_and_honours_the_cursor(
    manager: JobManager, engine: GatedEngine
) -> None:
    job = manager.submit(ReloadRequest(("a", "b")))
    threading.Timer(0.1, engine.gate.set).start()
    started = time.monotonic()
    events = manager.poll(job, 0, 5.0)
    assert 0.05 < time.monotonic() - started < 3
    assert events.done and events.cursor == 2
    assert [r.module for r in manager.poll(job, 1, 0.0).results] == ["b"]
    assert manager.poll(job, 5, 0.0).results == ()


def test_busy_when_too_many_jobs(manager: JobManager) -> None:
    for i in range(jobs.MAX_ACTIVE):
        manager.submit(ReloadRequest((f"m{i}",)))
    with pytest.raises(JobsBusy):
        manager.submit(ReloadRequest(("one_more",)))


def test_deadline_of_running_and_queued_jobs(manager: JobManager, engine: GatedEngine) -> None:
    running = manager.submit(ReloadRequest(("slow",), deadline_s=0.2))
    queued = manager.submit(ReloadRequest(("later",), deadline_s=0.2))
    events = manager.poll(running, 0, 5.0)
    assert events.done
    (result,) = events.results
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "Timeout" and "still running" in result.error.message
    events = manager.poll(queued, 0, 5.0)
    assert events.done and events.results[0].error is not None
    assert "not started" in events.results[0].error.message
    engine.gate.set()
    time.sleep(0.2)
    # the late engine result does not replace the reported timeout; the queued job never ran
    assert manager.poll(running, 0, 0.0).results[0].status == "failed"
    assert [c[1] for c in engine.calls] == [("slow",)]


def test_engine_exception_fails_every_module_and_worker_survives(
    manager: JobManager, engine: GatedEngine
) -> None:
    engine.gate.set()
    engine.raise_next = SystemExit(3)
    job = manager.submit(ReloadRequest(("a", "b")))
    events = manager.poll(job, 0, 5.0)
    assert [(r.status, r.error.type if r.error else None) for r in events.results] == [
        ("failed", "SystemExit"),
        ("failed", "SystemExit"),
    ]
    assert manager.poll(manager.submit(ReloadRequest(("c",))), 0, 5.0).results[0].status == (
        "reloaded"
    )


def test_finished_jobs_expire(engine: GatedEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    manager = JobManager(engine=engine, clock=lambda: now[0])
    engine.gate.set()
    try:
        job = manager.submit(ReloadRequest(("a",)))
        deadline = time.monotonic() + 5
        while not manager.poll(job, 0, 0.0).done and time.monotonic() < deadline:
            time.sleep(0.01)
        now[0] += jobs.JOB_TTL_S + 1
        manager.submit(ReloadRequest(("b",)))  # submitting prunes expired jobs
        with pytest.raises(UnknownJob):
            manager.poll(job, 0, 0.0)
    finally:
        manager.stop()


def test_stop_wakes_long_polls(manager: JobManager) -> None:
    job = manager.submit(ReloadRequest(("a",)))
    threading.Timer(0.1, manager.stop).start()
    started = time.monotonic()
    assert not manager.poll(job, 0, 10.0).done
    assert time.monotonic() - started < 2
    with pytest.raises(JobsBusy, match="stopping"):
        manager.submit(ReloadRequest(("b",)))
